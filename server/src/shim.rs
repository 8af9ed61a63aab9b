//! rsup-shim: the per-container shim and the exec helper, as a binary of
//! their own.
//!
//! rsupd starts one shim per running container (`rsup-shim __rsup-shim
//! DIR`) and one exec helper per `exec` or health check (`rsup-shim
//! __rsup-exec JSON`); both are described in `rsup_runtime::process`. They
//! used to be rsupd's own binary run again in another mode, and they still
//! are when this file is missing beside rsupd. A binary of their own has a
//! tenth of rsupd's code: it starts faster (fewer pages to fault in) and,
//! above all, the loader relocates far less of it at every exec, so every
//! container's shim and init keep less private memory (rsupd's relocated
//! `.data.rel.ro` alone was ~0.6 MB per container).
//!
//! It does nothing but dispatch, single-threaded, before anything else runs.
//! (`rsup_runtime::process::helper_main`, which rsupd calls first too).
//! `rsup-shim __rsup-build-id` prints the build it belongs to: rsupd runs
//! only a shim of its own build (see `rsup_runtime::process::BUILD_ID`).

use std::process::ExitCode;

use rsup_runtime::process::exec::EXEC_ARG;
use rsup_runtime::process::{SHIM_ARG, helper_main};

fn main() -> ExitCode {
    match helper_main(std::env::args_os()) {
        Some(code) => ExitCode::from(code),
        None => {
            eprintln!(
                "rsup-shim is started by rsupd: rsup-shim {SHIM_ARG} DIR | rsup-shim {EXEC_ARG} JSON"
            );
            ExitCode::from(2)
        }
    }
}
