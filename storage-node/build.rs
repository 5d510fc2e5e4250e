//! Build information (git commit, target triple) for `--version`: the same script as the
//! gateway's, see there.

include!("../gateway/build.rs");
