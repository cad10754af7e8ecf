//! Tests of the `pitch sweep` parameter grammar.

use super::*;

fn vals(spec: &str) -> Vec<String> {
    parse_param(spec).unwrap().values
}

fn err(spec: &str) -> ParamError {
    parse_param(spec).unwrap_err()
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn pt(pairs: &[(&str, &str)]) -> Point {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

fn param(name: &str, values: &[&str]) -> Param {
    Param {
        name: name.into(),
        values: s(values),
    }
}

// ---- parse_param: lists ----

#[test]
fn comma_list() {
    let p = parse_param("mode=fast,slow,auto").unwrap();
    assert_eq!(p.name, "mode");
    assert_eq!(p.values, s(&["fast", "slow", "auto"]));
}

#[test]
fn single_value_is_list_of_one() {
    assert_eq!(vals("x=42"), s(&["42"]));
    assert_eq!(vals("x=-5"), s(&["-5"]));
    assert_eq!(vals("x=1.5"), s(&["1.5"]));
}

#[test]
fn values_may_contain_equals_and_spaces() {
    assert_eq!(vals("opt=a=1,b=2"), s(&["a=1", "b=2"]));
    assert_eq!(vals("msg=hello world"), s(&["hello world"]));
    assert_eq!(vals("x= a , b "), s(&[" a ", " b "]));
}

#[test]
fn plain_values_that_resemble_ranges() {
    assert_eq!(vals("p=../data"), s(&["../data"]));
    assert_eq!(vals("p=v1..v2"), s(&["v1..v2"]));
    assert_eq!(vals("p=a:b:c"), s(&["a:b:c"]));
    assert_eq!(vals("p=16:9"), s(&["16:9"]));
    assert_eq!(vals("p=../a,../b"), s(&["../a", "../b"]));
    assert_eq!(vals("p=2024-01..x"), s(&["2024-01..x"]));
}

#[test]
fn identifier_names() {
    assert_eq!(parse_param("_a1=1").unwrap().name, "_a1");
    for bad in ["1a=1", "a-b=1", "=1", " a=1", "é=1"] {
        match err(bad) {
            ParamError::InvalidName { spec, .. } => assert_eq!(spec, bad),
            e => panic!("{bad}: {e:?}"),
        }
    }
}

#[test]
fn missing_equals_and_empty_values() {
    assert_eq!(err("abc"), ParamError::MissingEquals { spec: "abc".into() });
    assert_eq!(err("a="), ParamError::EmptyValues { spec: "a=".into() });
    assert_eq!(
        err("abc").to_string(),
        "invalid --param `abc`: expected NAME=VALUES"
    );
}

#[test]
fn empty_items_are_errors() {
    assert_eq!(
        err("a=x,,y"),
        ParamError::EmptyItem {
            spec: "a=x,,y".into(),
            position: 2
        }
    );
    assert!(matches!(
        err("a=x,"),
        ParamError::EmptyItem { position: 2, .. }
    ));
    assert!(matches!(
        err("a=,x"),
        ParamError::EmptyItem { position: 1, .. }
    ));
    assert_eq!(
        err("a=x,,y").to_string(),
        "invalid --param `a=x,,y`: item 2 of the comma list is empty"
    );
}

#[test]
fn ranges_inside_lists_are_errors() {
    assert_eq!(
        err("n=1..3,7"),
        ParamError::RangeInList {
            spec: "n=1..3,7".into(),
            item: "1..3".into()
        }
    );
    assert!(matches!(
        err("n=7,0.1:0.3:0.1"),
        ParamError::RangeInList { .. }
    ));
    let msg = err("n=1..3,7").to_string();
    assert!(msg.contains("`n=1..3,7`"), "{msg}");
    assert!(msg.contains("separate --param"), "{msg}");
    assert!(msg.contains("--params-file"), "{msg}");
}

// ---- parse_param: integer ranges ----

#[test]
fn int_range_inclusive() {
    assert_eq!(
        vals("n=1..10"),
        s(&["1", "2", "3", "4", "5", "6", "7", "8", "9", "10"])
    );
    assert_eq!(vals("n=5..5"), s(&["5"]));
}

#[test]
fn int_range_with_step() {
    let v = vals("n=0..100:5");
    assert_eq!(v.len(), 21);
    assert_eq!(v[0], "0");
    assert_eq!(v[1], "5");
    assert_eq!(v[20], "100");
}

#[test]
fn int_range_negative() {
    assert_eq!(vals("n=-5..5:5"), s(&["-5", "0", "5"]));
    assert_eq!(vals("n=-3..-1"), s(&["-3", "-2", "-1"]));
}

#[test]
fn int_range_errors_name_the_spec() {
    let cases = [
        ("n=0..10:0", "step must be positive, got 0"),
        ("n=0..10:-1", "step must be positive, got -1"),
        ("n=10..1", "end 1 is below start 10"),
        (
            "n=0..10:3",
            "end 10 is not reached from start 0 in steps of 3",
        ),
        ("n=1.5..3", "start `1.5` is not an integer"),
        ("n=1..x", "end `x` is not an integer"),
        ("n=1..", "end `` is not an integer"),
        ("n=0..1:0.1", "step `0.1` is not an integer"),
        ("n=0..10000000", "more than the limit of 1000000"),
    ];
    for (spec, want) in cases {
        let e = err(spec);
        assert!(
            matches!(&e, ParamError::BadRange { spec: s, .. } if s == spec),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!("invalid range in --param `{spec}`: ")),
            "{msg}"
        );
        assert!(msg.contains(want), "{spec}: {msg}");
    }
}

#[test]
fn int_range_extremes_do_not_overflow() {
    let v = vals(&format!("n={}..{}", i64::MAX - 1, i64::MAX));
    assert_eq!(v, s(&[&(i64::MAX - 1).to_string(), &i64::MAX.to_string()]));
    assert!(matches!(
        err(&format!("n={}..{}", i64::MIN, i64::MAX)),
        ParamError::BadRange { .. }
    ));
}

// ---- parse_param: float ranges ----

#[test]
fn float_range_no_binary_noise() {
    assert_eq!(vals("x=0.1:0.3:0.1"), s(&["0.1", "0.2", "0.3"]));
}

#[test]
fn float_range_ten_values_with_one_decimal() {
    let v = vals("x=0.1:1.0:0.1");
    assert_eq!(
        v,
        s(&["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9", "1.0"])
    );
}

#[test]
fn float_range_decimals_are_the_max_of_the_inputs() {
    assert_eq!(
        vals("x=0:1:0.25"),
        s(&["0.00", "0.25", "0.50", "0.75", "1.00"])
    );
    assert_eq!(vals("x=0:10:2"), s(&["0", "2", "4", "6", "8", "10"]));
    assert_eq!(vals("x=1:2:0.5"), s(&["1.0", "1.5", "2.0"]));
}

#[test]
fn float_range_negative_and_no_negative_zero() {
    assert_eq!(vals("x=-0.3:0.3:0.3"), s(&["-0.3", "0.0", "0.3"]));
    assert_eq!(
        vals("x=-0.2:0.2:0.1"),
        s(&["-0.2", "-0.1", "0.0", "0.1", "0.2"])
    );
}

#[test]
fn float_range_many_steps_stay_clean() {
    let v = vals("x=0:100:0.01");
    assert_eq!(v.len(), 10001);
    assert_eq!(v[1], "0.01");
    assert_eq!(v[3], "0.03");
    assert_eq!(v[9999], "99.99");
    assert_eq!(v[10000], "100.00");
}

#[test]
fn float_range_errors() {
    let cases = [
        ("x=0:1:0", "step must be positive, got 0"),
        ("x=0:1:-0.1", "step must be positive, got -0.1"),
        ("x=1.0:0.5:0.1", "end 0.5 is below start 1.0"),
        (
            "x=0:1:0.3",
            "end 1 is not reached from start 0 in steps of 0.3",
        ),
        ("x=1e-3:1:0.1", "start `1e-3` is not a plain decimal number"),
        ("x=0:1:abc", "step `abc` is not a plain decimal number"),
        ("x=10:30:00", "step must be positive, got 00"),
        ("x=0:1000000:0.5", "more than the limit"),
    ];
    for (spec, want) in cases {
        let e = err(spec);
        assert!(
            matches!(&e, ParamError::BadRange { spec: s, .. } if s == spec),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(msg.contains(&format!("`{spec}`")), "{msg}");
        assert!(msg.contains(want), "{spec}: {msg}");
    }
}

// ---- points / combine ----

#[test]
fn product_first_param_slowest() {
    let got = points(
        &[param("a", &["1", "2"]), param("b", &["x", "y", "z"])],
        false,
    )
    .unwrap();
    let want = vec![
        pt(&[("a", "1"), ("b", "x")]),
        pt(&[("a", "1"), ("b", "y")]),
        pt(&[("a", "1"), ("b", "z")]),
        pt(&[("a", "2"), ("b", "x")]),
        pt(&[("a", "2"), ("b", "y")]),
        pt(&[("a", "2"), ("b", "z")]),
    ];
    assert_eq!(got, want);
}

#[test]
fn product_of_three_and_of_none() {
    let got = points(
        &[
            param("a", &["1", "2"]),
            param("b", &["x"]),
            param("c", &["p", "q"]),
        ],
        false,
    )
    .unwrap();
    assert_eq!(got.len(), 4);
    assert_eq!(got[1], pt(&[("a", "1"), ("b", "x"), ("c", "q")]));
    assert_eq!(got[2], pt(&[("a", "2"), ("b", "x"), ("c", "p")]));
    assert!(points(&[], false).unwrap().is_empty());
    assert!(points(&[], true).unwrap().is_empty());
}

#[test]
fn zip_pairs_elementwise() {
    let got = points(&[param("a", &["1", "2"]), param("b", &["x", "y"])], true).unwrap();
    assert_eq!(
        got,
        vec![pt(&[("a", "1"), ("b", "x")]), pt(&[("a", "2"), ("b", "y")])]
    );
}

#[test]
fn zip_length_mismatch() {
    let e = points(
        &[
            param("a", &["1", "2", "3"]),
            param("b", &["x", "y"]),
            param("c", &["z"]),
        ],
        true,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "--zip needs all parameters to have the same number of values, \
         but `a` has 3 values, `b` has 2 values, `c` has 1 value"
    );
}

#[test]
fn duplicate_and_empty_params() {
    let e = points(&[param("a", &["1"]), param("a", &["2"])], false).unwrap_err();
    assert_eq!(e, ParamError::DuplicateName { name: "a".into() });
    assert_eq!(e.to_string(), "parameter `a` is given more than once");
    let e = points(&[param("a", &[])], false).unwrap_err();
    assert_eq!(e, ParamError::NoValues { name: "a".into() });
}

#[test]
fn too_many_points() {
    let big: Vec<String> = (0..1001).map(|i| i.to_string()).collect();
    let p = |n: &str| Param {
        name: n.into(),
        values: big.clone(),
    };
    assert_eq!(
        points(&[p("a"), p("b")], false).unwrap_err(),
        ParamError::TooManyPoints { max: MAX_POINTS }
    );
    let many: Vec<Param> = (0..100).map(|i| p(&format!("p{i}"))).collect();
    assert!(matches!(
        points(&many, false),
        Err(ParamError::TooManyPoints { .. })
    ));
}

#[test]
fn combine_crosses_csv_slowest() {
    let grid = vec![pt(&[("a", "1")]), pt(&[("a", "2")])];
    let csv = vec![pt(&[("b", "x"), ("c", "p")]), pt(&[("b", "y"), ("c", "q")])];
    let got = combine(grid.clone(), csv.clone()).unwrap();
    assert_eq!(
        got,
        vec![
            pt(&[("b", "x"), ("c", "p"), ("a", "1")]),
            pt(&[("b", "x"), ("c", "p"), ("a", "2")]),
            pt(&[("b", "y"), ("c", "q"), ("a", "1")]),
            pt(&[("b", "y"), ("c", "q"), ("a", "2")]),
        ]
    );
    assert_eq!(combine(grid.clone(), Vec::new()).unwrap(), grid);
    assert_eq!(combine(Vec::new(), csv.clone()).unwrap(), csv);
    assert!(combine(Vec::new(), Vec::new()).unwrap().is_empty());
}

#[test]
fn combine_name_clash() {
    let e = combine(vec![pt(&[("a", "1")])], vec![pt(&[("b", "x"), ("a", "2")])]).unwrap_err();
    assert_eq!(e, ParamError::NameClash { name: "a".into() });
    assert_eq!(
        e.to_string(),
        "parameter `a` is defined both by --param and in the --params-file"
    );
}

// ---- substitute ----

fn argv(v: &[&str]) -> Vec<String> {
    s(v)
}

#[test]
fn substitute_basic_and_repeated() {
    let got = substitute(
        &argv(&["./sim", "--n={n}", "-o", "out_{n}_{mode}.txt"]),
        &pt(&[("n", "8"), ("mode", "fast")]),
    )
    .unwrap();
    assert_eq!(got, s(&["./sim", "--n=8", "-o", "out_8_fast.txt"]));
}

#[test]
fn substitute_values_with_spaces_and_quotes_stay_in_one_argument() {
    let value = "it's a \"test\"";
    let got = substitute(&argv(&["echo", "{msg}", "[{msg}]"]), &pt(&[("msg", value)])).unwrap();
    assert_eq!(got, s(&["echo", value, "[it's a \"test\"]"]));
    assert_eq!(got.len(), 3);
}

#[test]
fn substitute_values_are_not_rescanned() {
    let got = substitute(&argv(&["{a}"]), &pt(&[("a", "{b} }{ {{"), ("b", "x")]));
    assert_eq!(got.unwrap_err(), ParamError::Unused { name: "b".into() });
    let got = substitute(&argv(&["{a}"]), &pt(&[("a", "{b} }{")])).unwrap();
    assert_eq!(got, s(&["{b} }{"]));
}

#[test]
fn substitute_brace_escapes() {
    let got = substitute(
        &argv(&["awk", "{{print ${n}}}", "{{}}", "}}{{"]),
        &pt(&[("n", "3")]),
    )
    .unwrap();
    assert_eq!(got, s(&["awk", "{print $3}", "{}", "}{"]));
    let got = substitute(&argv(&["{{{n}}}"]), &pt(&[("n", "3")])).unwrap();
    assert_eq!(got, s(&["{3}"]));
}

#[test]
fn substitute_unknown_placeholder() {
    let e = substitute(
        &argv(&["run", "--x={nope}", "{a}"]),
        &pt(&[("a", "1"), ("b", "2")]),
    )
    .unwrap_err();
    assert_eq!(
        e,
        ParamError::UnknownPlaceholder {
            name: "nope".into(),
            arg: "--x={nope}".into(),
            known: "a, b".into()
        }
    );
    assert_eq!(
        e.to_string(),
        "unknown placeholder `{nope}` in argument `--x={nope}`; known parameters: a, b \
         (write `{{` and `}}` for literal braces)"
    );
    let e = substitute(&argv(&["{}"]), &[]).unwrap_err();
    assert!(
        matches!(&e, ParamError::UnknownPlaceholder { name, known, .. }
        if name.is_empty() && known == "(none)")
    );
}

#[test]
fn substitute_unclosed_and_unmatched() {
    for arg in ["{n", "x{", "{a {n}", "{n}{"] {
        let e = substitute(&argv(&[arg]), &pt(&[("n", "1")])).unwrap_err();
        assert_eq!(e, ParamError::UnclosedBrace { arg: arg.into() }, "{arg}");
    }
    assert_eq!(
        ParamError::UnclosedBrace { arg: "{n".into() }.to_string(),
        "unclosed `{` in argument `{n` (write `{{` for a literal brace)"
    );
    let e = substitute(&argv(&["{n}", "a}b"]), &pt(&[("n", "1")])).unwrap_err();
    assert_eq!(e, ParamError::UnmatchedClose { arg: "a}b".into() });
    assert_eq!(
        e.to_string(),
        "unmatched `}` in argument `a}b` (write `}}` for a literal brace)"
    );
}

#[test]
fn substitute_unused_parameter() {
    let e = substitute(&argv(&["run", "{a}"]), &pt(&[("a", "1"), ("ab", "2")])).unwrap_err();
    assert_eq!(e, ParamError::Unused { name: "ab".into() });
    assert_eq!(
        e.to_string(),
        "parameter `ab` is not used: no argument of the command contains `{ab}`"
    );
    assert_eq!(substitute(&argv(&["true"]), &[]).unwrap(), s(&["true"]));
}

#[test]
fn end_to_end() {
    let grid = points(
        &[
            parse_param("n=1..2").unwrap(),
            parse_param("x=0.5:1.0:0.5").unwrap(),
        ],
        false,
    )
    .unwrap();
    let csv = read_csv("label\n\"a b\"\n", "l.csv").unwrap();
    let all = combine(grid, csv).unwrap();
    let cmds: Vec<Vec<String>> = all
        .iter()
        .map(|p| substitute(&argv(&["sim", "{n}", "{x}", "{label}"]), p).unwrap())
        .collect();
    assert_eq!(
        cmds,
        vec![
            s(&["sim", "1", "0.5", "a b"]),
            s(&["sim", "1", "1.0", "a b"]),
            s(&["sim", "2", "0.5", "a b"]),
            s(&["sim", "2", "1.0", "a b"]),
        ]
    );
}

#[test]
fn errors_quote_only_a_short_prefix_of_a_huge_value() {
    let huge = "x".repeat(1 << 20);
    for e in [
        err(&huge),
        err(&format!("{huge}-=1")),
        err(&format!("a=1..{huge}")),
        substitute(&[format!("{{{huge}}}")], &pt(&[("a", "1")])).unwrap_err(),
        read_csv(&format!("{huge}-\n1\n"), "f.csv").unwrap_err(),
    ] {
        let text = e.to_string();
        assert!(text.len() < 600, "{} bytes: {}", text.len(), &text[..600]);
        assert!(text.contains(" bytes in all)"), "{text}");
    }
    assert_eq!(excerpt("short"), "short");
    // Multi-byte characters are cut on a character boundary.
    let wide = "é".repeat(300);
    assert!(excerpt(&wide).starts_with(&"é".repeat(100)));
}

#[test]
fn int_ranges_keep_zero_padding() {
    assert_eq!(vals("x=00..03"), s(&["00", "01", "02", "03"]));
    assert_eq!(vals("x=08..11"), s(&["08", "09", "10", "11"]));
    assert_eq!(vals("x=000..10:5"), s(&["000", "005", "010"]));
    assert_eq!(vals("x=-03..01:2"), s(&["-03", "-01", "01"]));
    // Without a leading zero nothing is padded.
    assert_eq!(vals("x=0..2"), s(&["0", "1", "2"]));
    assert_eq!(vals("x=8..10"), s(&["8", "9", "10"]));
}

#[test]
fn literal_params_are_taken_as_they_are_and_merge_in_order() {
    let specs = |v: &[(bool, &str)]| -> Vec<(bool, String)> {
        v.iter().map(|(l, x)| (*l, x.to_string())).collect()
    };
    let got = parse_all(&specs(&[
        (true, "t=01:30:00"),
        (false, "n=1..2"),
        (true, "t=a,b"),
        (true, "e="),
    ]))
    .unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(
        (got[0].name.as_str(), got[0].values.clone()),
        ("t", s(&["01:30:00", "a,b"]))
    );
    assert_eq!(got[1].values, s(&["1", "2"]));
    assert_eq!(got[2].values, s(&[""]));
    assert!(matches!(
        parse_literal("9x=1"),
        Err(ParamError::InvalidName { .. })
    ));
    assert!(matches!(
        parse_literal("novalue"),
        Err(ParamError::MissingEquals { .. })
    ));
    // A name given twice by --param stays an error of `points`.
    let twice = parse_all(&specs(&[(false, "n=1"), (false, "n=2")])).unwrap();
    assert!(matches!(
        points(&twice, false),
        Err(ParamError::DuplicateName { .. })
    ));
}

#[test]
fn zip_rows_pairs_csv_rows_with_the_grid() {
    let grid = vec![pt(&[("a", "1")]), pt(&[("a", "2")])];
    let csv = vec![pt(&[("b", "x")]), pt(&[("b", "y")])];
    assert_eq!(
        zip_rows(grid.clone(), csv.clone()).unwrap(),
        vec![pt(&[("b", "x"), ("a", "1")]), pt(&[("b", "y"), ("a", "2")])]
    );
    assert_eq!(zip_rows(grid.clone(), Vec::new()).unwrap(), grid);
    assert!(matches!(
        zip_rows(grid.clone(), vec![pt(&[("b", "x")])]),
        Err(ParamError::ZipLengthMismatch { .. })
    ));
    assert!(matches!(
        zip_rows(grid, vec![pt(&[("a", "x")]), pt(&[("a", "y")])]),
        Err(ParamError::NameClash { .. })
    ));
}

// The `--params-file` tests (they use this file's helpers).
#[path = "csv_tests.rs"]
mod csv_tests;
