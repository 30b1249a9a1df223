//! Progress of `mpbond bench` on standard error: a bar with the elapsed time and an estimate of
//! what is left on a terminal, one plain line per run otherwise (logs, CI).

use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Runs done out of all.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    done: u64,
}

impl Progress {
    /// Progress over `total` runs.
    #[must_use]
    pub fn new(total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{spinner} {elapsed_precise} [{bar:32}] {pos}/{len} (about {eta} left) {msg}",
            )
            .map_or_else(
                |_| ProgressStyle::default_bar(),
                |s| s.progress_chars("=> "),
            );
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Self {
            bar,
            total,
            done: 0,
        }
    }

    /// A run starts.
    pub fn start(&mut self, what: &str) {
        match &self.bar {
            Some(bar) => bar.set_message(what.to_owned()),
            None => eprintln!("[{}/{}] {what} ...", self.done + 1, self.total),
        }
    }

    /// A run ended with `summary`.
    pub fn done(&mut self, summary: &str) {
        self.done += 1;
        match &self.bar {
            Some(bar) => {
                bar.println(format!("  {summary}"));
                bar.inc(1);
            }
            None => eprintln!("  {summary}"),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
