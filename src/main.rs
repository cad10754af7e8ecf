//! The `pitch` command line. The subcommands arrive with the CLI; for now the binary serves as
//! the job-side worker entry and prints its version.

fn main() {
    pitch::init();
    let arg = std::env::args().nth(1);
    match arg.as_deref() {
        Some("--version") | Some("-V") => println!("pitch {}", env!("CARGO_PKG_VERSION")),
        _ => {
            eprintln!(
                "pitch {}: the command line is not built yet; use the library",
                env!("CARGO_PKG_VERSION")
            );
            std::process::exit(2);
        }
    }
}
