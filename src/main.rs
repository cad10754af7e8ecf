//! The `pitch` command line: the same engine as the library, for programs that are not
//! written in Rust. The worker entry (`__pitch-worker`) is handled before argument parsing.

mod cli;

fn main() {
    pitch::init();
    // Behave like other command-line tools when output goes to a closed pipe (`| head`).
    // SAFETY: resetting a signal disposition before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    std::process::exit(cli::main());
}
