//! Progress bars, shown only when stderr is a terminal.

use std::io::IsTerminal;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A set of per-file bars, or nothing when not on a terminal.
#[derive(Clone, Default)]
pub struct Progress {
    multi: Option<MultiProgress>,
}

impl Progress {
    /// Bars on stderr if it is a terminal and `enabled`.
    pub fn new(enabled: bool) -> Self {
        let multi = (enabled && std::io::stderr().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Progress { multi }
    }

    /// A byte-counting bar for one file.
    pub fn bar(&self, label: &str, total: u64) -> Bar {
        Bar(self.multi.as_ref().map(|m| {
            let b = m.add(ProgressBar::new(total));
            let style = ProgressStyle::with_template(
                "{msg:30!} {bar:30} {bytes:>10}/{total_bytes:10} {bytes_per_sec:>12} {eta:>4}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            b.set_style(style);
            b.set_message(label.to_owned());
            b
        }))
    }
}

/// One bar (a no-op when bars are off).
#[derive(Clone)]
pub struct Bar(Option<ProgressBar>);

impl Bar {
    /// Adds `n` bytes.
    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.inc(n);
        }
    }

    /// Marks the bar done.
    pub fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish();
        }
    }
}
