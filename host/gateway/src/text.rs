//! Text helpers shared by the subcommands.

/// `s` with every run of whitespace (line breaks included) as one space:
/// an error from a library, a config parser or a connector prints as one
/// line, so a script reading stderr sees one record per problem.
pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_runs_become_one_space() {
        assert_eq!(one_line("  a\n\tb  c\r\n"), "a b c");
        assert_eq!(one_line(""), "");
    }
}
