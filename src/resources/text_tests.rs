use super::*;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Asserts that `parse` rejects each input with a message containing all fragments.
fn rejects<T: std::fmt::Debug>(
    parse: fn(&str) -> Result<T, ResourceError>,
    cases: &[(&str, &[&str])],
) {
    for (input, wants) in cases {
        let msg = parse(input).unwrap_err().to_string();
        for want in *wants {
            assert!(msg.contains(want), "{input:?}: {msg:?} lacks {want:?}");
        }
    }
}

#[test]
fn duration_forms() {
    let cases = [
        ("01:30:00", secs(5400)),
        (" 36:00:05 ", secs(36 * 3600 + 5)),
        ("1-00:00:00", secs(86_400)),
        ("2-03", secs(2 * 86_400 + 3 * 3600)),
        ("1-02:03", secs(86_400 + 7200 + 180)),
        ("0-00:00:59", secs(59)),
        ("90s", secs(90)),
        ("30m", secs(1800)),
        ("2h", secs(7200)),
        ("2H", secs(7200)),
        ("1d", secs(86_400)),
        ("1h30m", secs(5400)),
        ("1d 2h 3m 4s", secs(93_784)),
        ("1.5h", secs(5400)),
        ("0.25s", Duration::from_millis(250)),
        ("\t45s\n", secs(45)),
    ];
    for (input, want) in cases {
        assert_eq!(parse_duration(input).unwrap(), want, "{input:?}");
    }
}

#[test]
fn duration_errors() {
    rejects(
        parse_duration,
        &[
            ("60", &["invalid duration \"60\"", "add a unit", "minutes"]),
            ("30:00", &["ambiguous", "\"00:30:00\"", "\"30:00:00\""]),
            ("", &["empty"]),
            ("-5s", &["negative"]),
            ("01:60:00", &["minutes must be below 60, got 60"]),
            ("01:00:60", &["seconds must be below 60"]),
            ("1-24:00:00", &["hours must be below 24"]),
            ("1-2:3:4:5", &["expected HH:MM:SS"]),
            ("1:2:3:4", &["expected HH:MM:SS"]),
            ("aa:00:00", &["hours field \"aa\""]),
            ("x-01:00:00", &["days field"]),
            ("1-", &["hours field \"\""]),
            ("5x", &["unknown unit \"x\""]),
            ("h", &["expected a number"]),
            ("1h30", &["\"30\" has no unit"]),
            ("1.5h30m", &["fraction is only allowed"]),
            ("30m1h", &["largest first"]),
            ("1h1h", &["largest first"]),
            ("1.h", &["not a number"]),
            ("1.2.3h", &["not a number"]),
            ("1.0000000001s", &["decimal places"]),
            ("99999999999999999999999999d", &["too large"]),
            ("999999999999999999-00", &["too large"]),
            ("99999999999999999999:00:00", &["too large"]),
        ],
    );
    let e = parse_duration(" 60 ").unwrap_err();
    assert!(matches!(e, ResourceError::Invalid { field: "duration", text, .. } if text == " 60 "));
}

#[test]
fn memory_forms() {
    let cases = [
        ("4G", 4 * GIB),
        ("4GB", 4 * GIB),
        ("4GiB", 4 * GIB),
        ("4gib", 4 * GIB),
        ("512M", 512 * MIB),
        ("512 mb", 512 * MIB),
        ("1T", 1 << 40),
        ("2P", 2 << 50),
        ("100K", 102_400),
        ("1.5G", 1536 * MIB),
        ("1.1K", 1127), // 1126.4 rounded up
        (" 100B ", 100),
    ];
    for (input, want) in cases {
        assert_eq!(parse_memory(input).unwrap(), want, "{input:?}");
    }
}

#[test]
fn memory_errors() {
    rejects(
        parse_memory,
        &[
            (
                "4096",
                &["invalid memory \"4096\"", "add a unit", "megabytes"],
            ),
            ("G", &["expected a number"]),
            ("", &["expected a number"]),
            ("-1G", &["expected a number"]),
            ("4X", &["unknown unit \"x\""]),
            ("16E", &["unknown unit"]),
            ("16384P", &["too large"]),
            ("99999999999999999999999999999999999999999G", &["too large"]),
            ("1..5G", &["not a number"]),
        ],
    );
}

#[test]
fn slurm_formats() {
    assert_eq!(format_slurm_time(secs(0)), "00:00:00");
    assert_eq!(format_slurm_time(secs(5400)), "01:30:00");
    assert_eq!(format_slurm_time(secs(86_399)), "23:59:59");
    assert_eq!(format_slurm_time(secs(86_400)), "1-00:00:00");
    assert_eq!(format_slurm_time(secs(2 * 86_400 + 3723)), "2-01:02:03");
    assert_eq!(format_slurm_time(Duration::from_millis(59_001)), "00:01:00");
    assert_eq!(format_slurm_memory(4 * GIB), "4G");
    assert_eq!(format_slurm_memory(1536 * MIB), "1536M");
    assert_eq!(format_slurm_memory(100), "1M");
    assert_eq!(format_slurm_memory(0), "1M");
    assert_eq!(format_slurm_memory(GIB + 1), "1025M");
    assert_eq!(format_slurm_memory(1 << 40), "1024G");
}

#[test]
fn canonical_texts() {
    assert_eq!(duration_text(Duration::new(1, 1)), "1.000000001s");
    assert_eq!(memory_text(3 << 50), "3P");
    assert_eq!(memory_text(2048), "2K");
    assert_eq!(memory_text(0), "0B");
    for d in [secs(0), Duration::new(7, 123_456_789), secs(u64::MAX)] {
        assert_eq!(parse_duration(&duration_text(d)).unwrap(), d);
    }
    for b in [0, 1, 1023, 4 * GIB, u64::MAX, 16383 << 50] {
        assert_eq!(parse_memory(&memory_text(b)).unwrap(), b);
    }
}
