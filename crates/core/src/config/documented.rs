//! Every environment variable the proxy reads has a row in a configuration
//! table of the documentation (README.md or docs/*.md): a variable an
//! operator cannot find is a variable nobody sets, or one set wrong.
//!
//! The variables are found in the sources of the core, the server and the
//! platform adapters: every string literal spelled like a variable
//! (`GIGACHAT_TIMEOUT`, `REDIS_URL`) outside tests, and every name given
//! to the reader ([`super::Env`]) directly (`HOST`). A row counts when the
//! name is in backticks in the first cell of a real table row (a header
//! and a `|---|` line above it): a row that has slipped out of its table
//! renders as a stray line of pipes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Spelled like variables, but not read from the environment.
const NOT_VARIABLES: [(&str, &str); 6] = [
    ("GIGACHAT_API_PERS", "a value of GIGACHAT_SCOPE"),
    ("GIGACHAT_API_B2B", "a value of GIGACHAT_SCOPE"),
    ("GIGACHAT_API_CORP", "a value of GIGACHAT_SCOPE"),
    ("AWS_LAMBDA_RUNTIME_API", "set by the Lambda runtime"),
    ("AWS_LAMBDA_FUNCTION_NAME", "set by the Lambda runtime"),
    ("VERCEL_IPC_PATH", "set by Vercel's runtime"),
];

/// The reader's methods that take a variable name first.
const READER_METHODS: [&str; 8] = [
    "get", "first", "parse", "off_or", "bool", "seconds", "count", "url",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

fn is_variable_like(literal: &str) -> bool {
    let starts_upper = literal.starts_with(|c: char| c.is_ascii_uppercase());
    starts_upper
        && literal.split('_').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        })
}

/// The byte ranges of the contents of `code`'s string literals, and which
/// bytes are code (not inside a string, a character literal or a comment:
/// a `'"'` is not a string, and a `{` in a string is not a brace).
fn lex(code: &str) -> (Vec<(usize, usize)>, Vec<bool>) {
    let bytes = code.as_bytes();
    let mut literals = Vec::new();
    let mut is_code = vec![true; bytes.len()];
    let mut i = 0;
    while i < bytes.len() {
        let rest = &bytes[i..];
        let after_identifier =
            i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        let raw_string = !after_identifier && (rest.starts_with(b"r#") || rest.starts_with(b"r\""));
        let (skip, code_byte) = if rest.starts_with(b"//") {
            (
                rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len()),
                false,
            )
        } else if rest.starts_with(b"/*") {
            let end = rest.windows(2).position(|w| w == b"*/");
            (end.map_or(rest.len(), |end| end + 2), false)
        } else if bytes[i] == b'\'' {
            // A character literal ('"', '\'', 'x') or a lifetime ('a).
            match rest {
                [_, b'\\', _, b'\'', ..] => (4, false),
                [_, b'\\', ..] => {
                    let end = rest[2..].iter().position(|&b| b == b'\'');
                    (end.map_or(2, |end| end + 3), false)
                }
                [_, _, b'\'', ..] => (3, false),
                _ => (1, true),
            }
        } else if bytes[i] == b'"' || raw_string {
            let hashes = if raw_string {
                rest[1..].iter().take_while(|&&b| b == b'#').count()
            } else {
                0
            };
            let start = i + if raw_string { 2 + hashes } else { 1 };
            let mut end = start;
            while end < bytes.len() {
                if !raw_string && bytes[end] == b'\\' {
                    end += 2;
                    continue;
                }
                let closing_hashes = bytes[end + 1..]
                    .iter()
                    .take(hashes)
                    .take_while(|&&b| b == b'#')
                    .count();
                if bytes[end] == b'"' && closing_hashes == hashes {
                    break;
                }
                end += 1;
            }
            let end = end.min(bytes.len());
            literals.push((start, end));
            ((end + 1 + hashes).min(bytes.len()) - i, false)
        } else {
            (1, true)
        };
        if !code_byte {
            is_code[i..i + skip].fill(false);
        }
        i += skip;
    }
    (literals, is_code)
}

/// The byte ranges of items marked `#[cfg(test)]`: a `mod tests;` line, or
/// everything up to the brace that closes the item.
fn test_items(code: &str, is_code: &[bool]) -> Vec<(usize, usize)> {
    const MARK: &str = "#[cfg(test)]";
    let bytes = code.as_bytes();
    let mut items = Vec::new();
    let mut from = 0;
    while let Some(found) = code[from..].find(MARK) {
        let start = from + found;
        if !is_code[start] {
            from = start + MARK.len();
            continue;
        }
        let mut depth = 0usize;
        let mut end = bytes.len();
        for (i, &byte) in bytes.iter().enumerate().skip(start + MARK.len()) {
            if !is_code[i] {
                continue;
            }
            match byte {
                b';' if depth == 0 => {
                    end = i + 1;
                    break;
                }
                b'{' => depth += 1,
                b'}' if depth <= 1 => {
                    end = i + 1;
                    break;
                }
                b'}' => depth -= 1,
                _ => {}
            }
        }
        items.push((start, end));
        from = end;
    }
    items
}

/// `(literal, the code right before it)` for every string literal of
/// `code` outside its tests.
fn literals_outside_tests(code: &str) -> Vec<(String, String)> {
    let (literals, is_code) = lex(code);
    let tests = test_items(code, &is_code);
    literals
        .into_iter()
        .filter(|&(start, _)| !tests.iter().any(|&(from, to)| (from..to).contains(&start)))
        .map(|(start, end)| {
            let opening = code[..start].trim_end_matches(['"', '#', 'r']);
            let before = opening.trim_end();
            let before = &before[before.len().saturating_sub(16)..];
            (code[start..end].to_owned(), before.to_owned())
        })
        .collect()
}

/// The string literals of a source file outside its tests; files named
/// `tests.rs` (and this one) are tests as a whole.
fn production_literals(path: &Path) -> Vec<(String, String)> {
    let name = path
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or_default();
    if name == "tests.rs" || name == "documented.rs" {
        return Vec::new();
    }
    literals_outside_tests(&std::fs::read_to_string(path).unwrap())
}

/// The variables the code reads.
fn variables_read() -> BTreeSet<String> {
    let root = workspace();
    let mut files = Vec::new();
    for dir in [
        "crates/core/src",
        "crates/server/src",
        "crates/platform/src",
    ] {
        rust_files(&root.join(dir), &mut files);
    }
    let mut names = BTreeSet::new();
    for file in files {
        for (literal, before) in production_literals(&file) {
            // `env!("CARGO_PKG_VERSION")` is read by the compiler.
            if before.ends_with("env!(") || !is_variable_like(&literal) {
                continue;
            }
            let given_to_reader = READER_METHODS
                .iter()
                .any(|method| before.ends_with(&format!(".{method}(")));
            if literal.contains('_') || given_to_reader {
                names.insert(literal);
            }
        }
    }
    for (name, _) in NOT_VARIABLES {
        names.remove(name);
    }
    names
}

/// Backticked names in the first cell of every row of every real table.
fn documented_in(markdown: &str) -> BTreeSet<String> {
    let lines: Vec<&str> = markdown.lines().map(str::trim).collect();
    let is_separator = |line: &str| {
        line.starts_with('|')
            && line.contains('-')
            && line.chars().all(|c| matches!(c, '|' | '-' | ':' | ' '))
    };
    let mut names = BTreeSet::new();
    let mut in_table = false;
    for (i, line) in lines.iter().enumerate() {
        if !line.starts_with('|') {
            in_table = false;
            continue;
        }
        if is_separator(line) {
            // A table starts with a header row right above its separator.
            in_table = i > 0 && lines[i - 1].starts_with('|');
            continue;
        }
        if !in_table {
            continue;
        }
        let first_cell = line[1..].split('|').next().unwrap_or_default();
        for (index, part) in first_cell.split('`').enumerate() {
            if index % 2 == 1 {
                names.insert(part.trim().to_owned());
            }
        }
    }
    names
}

fn documented() -> BTreeSet<String> {
    let root = workspace();
    let mut pages = vec![root.join("README.md")];
    if let Ok(entries) = std::fs::read_dir(root.join("docs")) {
        for entry in entries {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|ext| ext == "md") {
                pages.push(path);
            }
        }
    }
    pages
        .iter()
        .filter_map(|page| std::fs::read_to_string(page).ok())
        .flat_map(|text| documented_in(&text))
        .collect()
}

#[test]
fn every_variable_read_has_a_row_in_a_configuration_table() {
    let read = variables_read();
    // The scan itself must work: a few variables every version reads.
    for known in [
        "GIGACHAT_CREDENTIALS",
        "REDIS_URL",
        "HOST",
        "PORT",
        "RUST_LOG",
    ] {
        assert!(
            read.contains(known),
            "the source scan missed {known}: {read:?}"
        );
    }
    let documented = documented();
    let missing: Vec<&String> = read.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "read by the code but without a row (`| \\`NAME\\` | default | meaning |`) in a configuration table of README.md or docs/*.md: {missing:?}"
    );
}

#[test]
fn a_row_outside_its_table_does_not_count() {
    let markdown = "\
| Variable | Default | Meaning |
|---|---|---|
| `A_VAR`, `B_VAR` | — | in the table |

A paragraph between.
| `STRAY_VAR` | `info` | renders as a line of pipes |
";
    let names = documented_in(markdown);
    assert!(
        names.contains("A_VAR") && names.contains("B_VAR"),
        "{names:?}"
    );
    assert!(!names.contains("STRAY_VAR"), "{names:?}");
}

#[test]
fn the_scan_finds_literals_outside_tests_and_names_given_to_the_reader() {
    let code = r##"
        let a = env.get("HOST");
        // a "COMMENTED_OUT" literal, and a quote char: '"'
        const B: &str = "GIGACHAT_SOMETHING";
        let c = "G\"E{T"; let q = '\''; fn f<'a>(x: &'a str) {}
        /* "BLOCK_COMMENT" */ let r = r#"RAW_ONE "quoted""#;
        #[cfg(test)]
        mod tests;
        #[cfg(test)]
        fn helper() { let x = "IN_A_TEST_HELPER"; if x == "}" {} }
        let d = env!("CARGO_PKG_VERSION");
        #[cfg(test)]
        mod tests { const T: &str = "IN_TESTS"; }
    "##;
    let literals = literals_outside_tests(code);
    let names: Vec<&str> = literals.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(
        names,
        [
            "HOST",
            "GIGACHAT_SOMETHING",
            "G\\\"E{T",
            "RAW_ONE \"quoted\"",
            "CARGO_PKG_VERSION"
        ]
    );
    assert!(literals[0].1.ends_with(".get("), "{literals:?}");
    assert!(literals[4].1.ends_with("env!("), "{literals:?}");
    assert!(is_variable_like("GIGACHAT_SOMETHING") && is_variable_like("HOST"));
    assert!(!is_variable_like("gigachat") && !is_variable_like("A__B"));
}
