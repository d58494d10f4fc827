//! One spinner per phase of a long command, with the elapsed time; on a terminal it animates,
//! elsewhere only the final line of each phase is printed. Everything goes to stderr so that
//! stdout stays parseable.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A phase in progress.
pub struct Phase {
    bar: ProgressBar,
    name: String,
    started: Instant,
}

impl Phase {
    /// Starts a spinner for `name`.
    pub fn start(name: impl Into<String>) -> Self {
        let name = name.into();
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix} {wide_msg} [{elapsed}]")
                .unwrap_or_else(|_| ProgressStyle::default_spinner())
                .tick_strings(&["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏", "✓"]),
        );
        bar.set_prefix(name.clone());
        if !bar.is_hidden() {
            bar.enable_steady_tick(Duration::from_millis(120));
        }
        Self {
            bar,
            name,
            started: Instant::now(),
        }
    }

    /// Updates the detail after the phase name.
    pub fn message(&self, message: impl Into<String>) {
        self.bar.set_message(message.into());
    }

    /// Runs `f` with the spinner hidden, for prompts.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.bar.suspend(f)
    }

    /// Ends the phase successfully.
    pub fn done(self, detail: &str) {
        self.finish("✓", detail);
    }

    /// Ends the phase with a failure.
    pub fn failed(self, detail: &str) {
        self.finish("✗", detail);
    }

    fn finish(self, mark: &str, detail: &str) {
        self.bar.finish_and_clear();
        let elapsed = format_duration(self.started.elapsed());
        let sep = if detail.is_empty() { "" } else { ": " };
        eprintln!("{mark} {}{sep}{detail} ({elapsed})", self.name);
    }
}

/// Prints the line of a phase that a previous run completed.
pub fn skipped(name: &str, why: &str) {
    eprintln!("✓ {name}: {why}");
}

/// `1.2s`, `42s`, `3m05s`.
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs < 10 {
        format!("{:.1}s", d.as_secs_f32())
    } else if secs < 60 {
        format!("{secs}s")
    } else {
        format!("{}m{:02}s", secs / 60, secs % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(format_duration(Duration::from_millis(1234)), "1.2s");
        assert_eq!(format_duration(Duration::from_secs(42)), "42s");
        assert_eq!(format_duration(Duration::from_secs(185)), "3m05s");
    }
}
