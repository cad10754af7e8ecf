# Sourced by the benches/run-*.sh scripts: makes (once) the virtualenv the Python peers run
# in and installs executorlib there. Needs `say` and `die` defined by the caller; sets `py`.
#
#   bench_venv VENV SPEC   # SPEC: pip requirement for executorlib, e.g. executorlib[cache]
bench_venv() {
    local venv="$1" spec="$2"
    if [[ ! -x "$venv/bin/python" ]]; then
        say "creating virtualenv $venv"
        python3 -m venv "$venv" || die "python3 -m venv $venv failed (on Debian: apt-get install python3-venv)"
    fi
    py="$venv/bin/python"
    # executorlib itself, plus h5py (the [cache] extra), which executorlib needs for
    # cache_directory=...
    if ! "$py" -c 'import executorlib, h5py' >/dev/null 2>&1; then
        say "pip install $spec into $venv"
        "$py" -m pip install --quiet "$spec" || die "pip install $spec failed"
    fi
    say "executorlib $("$py" -c 'import executorlib; print(executorlib.__version__)'), $("$py" --version 2>&1)"
}
