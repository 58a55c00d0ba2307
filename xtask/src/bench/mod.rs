//! `cargo xtask bench <suite>`: benchmarks that write their report into BENCHMARKS.md, one
//! `## ` section per suite, so running one suite keeps the other sections.

use anyhow::{Context, Result};

mod http;
mod kernel;
mod limits;
mod live;
mod threats;
mod tokens;

pub use http::http;
pub use kernel::{KernelParts, kernel};
pub use limits::limits;
pub use threats::threats;
pub use tokens::tokens;

/// Replaces the section titled `title` in BENCHMARKS.md with `section`, or appends it.
pub fn write_section(title: &str, section: &str) -> Result<()> {
    let path = crate::workspace_root().join("BENCHMARKS.md");
    let existing = std::fs::read_to_string(&path).unwrap_or_default();
    std::fs::write(&path, replace_section(&existing, title, section))
        .with_context(|| format!("failed to write {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

/// Replaces the text from the line `title` up to the next `## ` heading with `section`, or
/// appends `section` when no such line exists.
fn replace_section(existing: &str, title: &str, section: &str) -> String {
    let body = if existing.is_empty() {
        "# Benchmarks\n\n"
    } else {
        existing
    };
    let Some(start) = body.find(title) else {
        return format!("{}\n\n{section}", body.trim_end());
    };
    let after = start + title.len();
    let end = body[after..]
        .find("\n## ")
        .map_or(body.len(), |offset| after + offset + 1);
    let rest = &body[end..];
    // A section that ends without a blank line would run into the next heading.
    let gap = if rest.is_empty() || section.ends_with("\n\n") {
        ""
    } else if section.ends_with('\n') {
        "\n"
    } else {
        "\n\n"
    };
    format!("{}{section}{gap}{rest}", &body[..start])
}

#[cfg(test)]
mod tests {
    use super::replace_section;

    #[test]
    fn replace_section_keeps_blank_line() {
        let existing = "# Benchmarks\n\n## A\n\nold\n\n## B\n\nkept\n";

        let replaced = replace_section(existing, "## A", "## A\n\nnew\n");

        assert_eq!(replaced, "# Benchmarks\n\n## A\n\nnew\n\n## B\n\nkept\n");
    }

    const FILE: &str = "# Benchmarks\n\n## Kernel\n\nold kernel\n\n### Notes\n\nnote\n\n## Limits\n\nold limits\n";

    #[test]
    fn section_replaced_up_to_next_section() {
        let updated = replace_section(FILE, "## Kernel", "## Kernel\n\nnew kernel\n\n");

        assert!(updated.contains("new kernel"), "{updated}");
        assert!(!updated.contains("old kernel"), "{updated}");
        assert!(!updated.contains("### Notes"), "{updated}");
        assert!(updated.contains("## Limits\n\nold limits"), "{updated}");
    }

    #[test]
    fn last_section_replaced_to_end() {
        let updated = replace_section(FILE, "## Limits", "## Limits\n\nnew limits\n");

        assert!(updated.ends_with("## Limits\n\nnew limits\n"), "{updated}");
        assert!(updated.contains("old kernel"), "{updated}");
    }

    #[test]
    fn missing_section_appended() {
        let updated = replace_section("# Benchmarks\n", "## Limits", "## Limits\n\nrows\n");

        assert_eq!(updated, "# Benchmarks\n\n## Limits\n\nrows\n");
    }

    #[test]
    fn empty_file_gets_title() {
        let updated = replace_section("", "## Limits", "## Limits\n\nrows\n");

        assert!(updated.starts_with("# Benchmarks\n\n## Limits"), "{updated}");
    }
}
