//! Tests of `--params-file` reading: `read_input` and `read_csv`.

use std::path::Path;

use super::*;

#[test]
fn csv_basic_lf_and_trailing_newline() {
    let rows = read_csv("a,b\n1,x\n2,y\n", "p.csv").unwrap();
    assert_eq!(
        rows,
        vec![pt(&[("a", "1"), ("b", "x")]), pt(&[("a", "2"), ("b", "y")])]
    );
    assert_eq!(read_csv("a,b\n1,x\n2,y", "p.csv").unwrap(), rows);
}

#[test]
fn csv_crlf_bom_and_blank_lines() {
    let rows = read_csv("\u{feff}a,b\r\n1,x\r\n\r\n2,y\r\n", "p.csv").unwrap();
    assert_eq!(
        rows,
        vec![pt(&[("a", "1"), ("b", "x")]), pt(&[("a", "2"), ("b", "y")])]
    );
}

#[test]
fn csv_quoting() {
    let text = "a,b,c\n\"x,y\",\"say \"\"hi\"\"\",\"\"\n\"two\nlines\",\"it's\",5\"\n";
    let rows = read_csv(text, "q.csv").unwrap();
    assert_eq!(
        rows,
        vec![
            pt(&[("a", "x,y"), ("b", "say \"hi\""), ("c", "")]),
            pt(&[("a", "two\nlines"), ("b", "it's"), ("c", "5\"")]),
        ]
    );
}

#[test]
fn csv_quoted_crlf_kept_and_empty_fields() {
    let rows = read_csv("a,b\r\n\"l1\r\nl2\",\r\n,\r\n", "q.csv").unwrap();
    assert_eq!(
        rows,
        vec![
            pt(&[("a", "l1\r\nl2"), ("b", "")]),
            pt(&[("a", ""), ("b", "")])
        ]
    );
}

#[test]
fn csv_bad_row_names_file_and_line() {
    let e = read_csv("a,b\n1,2\n\"x\ny\",2\n3\n", "sweep.csv").unwrap_err();
    assert_eq!(
        e,
        ParamError::CsvFieldCount {
            origin: "sweep.csv".into(),
            line: 5,
            expected: 2,
            found: 1
        }
    );
    assert_eq!(
        e.to_string(),
        "sweep.csv:5: expected 2 fields as in the header, found 1"
    );
    let e = read_csv("a\n1,2\n", "f.csv").unwrap_err();
    assert!(matches!(
        e,
        ParamError::CsvFieldCount {
            line: 2,
            found: 2,
            ..
        }
    ));
}

#[test]
fn csv_header_errors() {
    assert_eq!(
        read_csv("", "f.csv").unwrap_err(),
        ParamError::CsvEmpty {
            origin: "f.csv".into()
        }
    );
    assert_eq!(
        read_csv("\n\n", "f.csv").unwrap_err(),
        ParamError::CsvEmpty {
            origin: "f.csv".into()
        }
    );
    assert_eq!(
        read_csv("a,b\n", "f.csv").unwrap_err(),
        ParamError::CsvNoRows {
            origin: "f.csv".into()
        }
    );
    let e = read_csv("a, b\n1,2\n", "f.csv").unwrap_err();
    assert_eq!(
        e,
        ParamError::CsvInvalidName {
            origin: "f.csv".into(),
            line: 1,
            name: " b".into()
        }
    );
    assert!(e.to_string().starts_with("f.csv:1: ` b` in the header"));
    assert_eq!(
        read_csv("a,a\n1,2\n", "f.csv").unwrap_err(),
        ParamError::CsvDuplicateName {
            origin: "f.csv".into(),
            line: 1,
            name: "a".into()
        }
    );
}

#[test]
fn csv_quote_errors() {
    assert_eq!(
        read_csv("a\n\"open\n", "f.csv").unwrap_err(),
        ParamError::CsvUnterminatedQuote {
            origin: "f.csv".into(),
            line: 2
        }
    );
    let e = read_csv("a,b\n\"x\"y,2\n", "f.csv").unwrap_err();
    assert_eq!(
        e,
        ParamError::CsvAfterQuote {
            origin: "f.csv".into(),
            line: 2,
            found: 'y'
        }
    );
    assert!(e
        .to_string()
        .starts_with("f.csv:2: unexpected `y` after a closing quote"));
}

#[test]
fn csv_values_written_by_the_csv_crate_come_back_byte_for_byte() {
    // What `pitch results --format csv` (the same crate's writer) and other tools write: CR,
    // LF and CRLF inside values, commas, quotes, `%`, leading zeros, spaces, tabs, text that
    // looks like a range, non-ASCII, empty values.
    let values = [
        "a\rb",
        "l1\nl2",
        "l1\r\nl2",
        "x,y",
        "say \"hi\"",
        "\"",
        "100%",
        "%d",
        "007",
        " padded ",
        "tab\there",
        "1..3",
        "01:30:00",
        "é ✓",
        "",
        "trailing\r",
    ];
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(["n", "v"]).unwrap();
    for (i, v) in values.iter().enumerate() {
        w.write_record([i.to_string().as_str(), v]).unwrap();
    }
    let text = String::from_utf8(w.into_inner().unwrap()).unwrap();
    let rows = read_csv(&text, "w.csv").unwrap();
    let got: Vec<&str> = rows.iter().map(|r| r[1].1.as_str()).collect();
    assert_eq!(got, values);
}

#[test]
fn csv_cr_line_ends_end_records_and_count_as_lines() {
    let rows = read_csv("a,b\r1,x\r2,y\r", "p.csv").unwrap();
    assert_eq!(
        rows,
        vec![pt(&[("a", "1"), ("b", "x")]), pt(&[("a", "2"), ("b", "y")])]
    );
    assert_eq!(
        read_csv("a,b\r1,2\r3\r", "p.csv").unwrap_err(),
        ParamError::CsvFieldCount {
            origin: "p.csv".into(),
            line: 3,
            expected: 2,
            found: 1
        }
    );
}

#[test]
fn csv_error_lines_count_blank_lines_and_lines_inside_quotes() {
    // The csv crate's own position of a record is taken before the blank lines it skips.
    let e = read_csv("\n\na,b\r\n\r\n1,2\n\n\n3\n", "f.csv").unwrap_err();
    assert_eq!(
        e.to_string(),
        "f.csv:8: expected 2 fields as in the header, found 1"
    );
    assert_eq!(
        read_csv("\n\r\n\ra,a\n1,2\n", "f.csv").unwrap_err(),
        ParamError::CsvDuplicateName {
            origin: "f.csv".into(),
            line: 4,
            name: "a".into()
        }
    );
    let e = read_csv("a,b\n\"x\r\ny\",2\n\n1,2,3\n", "f.csv").unwrap_err();
    assert_eq!(
        e.to_string(),
        "f.csv:5: expected 2 fields as in the header, found 3"
    );
}

#[test]
fn csv_unterminated_quotes_are_refused_naming_the_opening_line() {
    let unterminated = |text: &str| match read_csv(text, "f.csv") {
        Err(ParamError::CsvUnterminatedQuote { origin, line }) if origin == "f.csv" => line,
        other => panic!("{text:?}: {other:?}"),
    };
    // The csv crate alone would read each of these as a last value running to the end.
    assert_eq!(unterminated("a,b\n1,\"open\n2,3\n"), 2);
    assert_eq!(unterminated("a\n\"x\"\"\n"), 2);
    assert_eq!(unterminated("a\r\n\"\"\""), 2);
    assert_eq!(unterminated("a,b\n\"l1\nl2\",\"open"), 3);
    assert_eq!(unterminated("\"a"), 1);
    assert_eq!(
        read_csv("a\n\"open\n", "f.csv").unwrap_err().to_string(),
        "f.csv:2: quoted field is never closed"
    );
    // Closed ones are fine, an escaped quote last included.
    assert_eq!(
        read_csv("a\n\"x\"\"\"\n\"\"", "f.csv").unwrap(),
        vec![pt(&[("a", "x\"")]), pt(&[("a", "")])]
    );
}

#[test]
fn csv_text_after_a_closing_quote_is_refused() {
    let e = read_csv("a,b\n1,2\n\"x\" ,2\n", "f.csv").unwrap_err();
    assert_eq!(
        e,
        ParamError::CsvAfterQuote {
            origin: "f.csv".into(),
            line: 3,
            found: ' '
        }
    );
    assert!(matches!(
        read_csv("a\n\"say \"hi\"\"\n", "f.csv").unwrap_err(),
        ParamError::CsvAfterQuote {
            line: 2,
            found: 'h',
            ..
        }
    ));
    assert!(matches!(
        read_csv("a\n\"x\"é\n", "f.csv").unwrap_err(),
        ParamError::CsvAfterQuote {
            line: 2,
            found: 'é',
            ..
        }
    ));
    // A line end or a comma may follow the closing quote; a quote inside an unquoted field
    // is literal.
    assert_eq!(
        read_csv("\"a\",\"b\"\r\"x\",\"\"\n5\",\"y\"\r\n", "f.csv").unwrap(),
        vec![
            pt(&[("a", "x"), ("b", "")]),
            pt(&[("a", "5\""), ("b", "y")])
        ]
    );
}

#[test]
fn an_endless_input_is_refused_at_the_limit_with_bounded_memory() {
    let limit = 1 << 20;
    let e = read_input(Path::new("/dev/zero"), limit).unwrap_err();
    assert!(
        e.starts_with("/dev/zero: larger than the limit of 1048576 bytes")
            && e.contains("--max-params-bytes N")
            && e.contains("PITCH_MAX_PARAMS_BYTES"),
        "{e}"
    );
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("p.csv");
    std::fs::write(&f, "a\n1\n").unwrap();
    assert_eq!(read_input(&f, 4).unwrap(), "a\n1\n");
    assert!(read_input(&f, 3).unwrap_err().contains("limit of 3 bytes"));
    std::fs::write(&f, b"a\n\xff\n").unwrap();
    assert!(read_input(&f, 100).unwrap_err().contains("not UTF-8"));
}

#[test]
fn a_csv_over_the_point_limit_stops_at_the_limit() {
    // The default limit: one row more than MAX_POINTS is refused while reading.
    let mut text = String::from("a\n");
    for _ in 0..=MAX_POINTS {
        text.push_str("1\n");
    }
    assert_eq!(
        read_csv(&text, "f.csv").unwrap_err(),
        ParamError::TooManyPoints { max: MAX_POINTS }
    );
}
