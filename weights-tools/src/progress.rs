//! A one-line progress bar on stderr: redrawn at most ten times a second on a terminal, a
//! single summary line otherwise (logs, tests).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

pub struct Progress {
    label: &'static str,
    total: u64,
    done: u64,
    start: Instant,
    drawn: Option<Instant>,
    terminal: bool,
}

impl Progress {
    pub fn new(label: &'static str, total: u64) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        Progress {
            label,
            total: total.max(1),
            done: 0,
            start: Instant::now(),
            drawn: None,
            terminal,
        }
    }

    fn draw(&self) {
        let percent = self.done * 100 / self.total;
        let filled = (percent / 4) as usize;
        eprint!(
            "\r{} [{}{}] {percent:3}% {:.0} / {:.0} MB, {:.1} s",
            self.label,
            "#".repeat(filled),
            " ".repeat(25 - filled),
            self.done as f64 / 1e6,
            self.total as f64 / 1e6,
            self.start.elapsed().as_secs_f64()
        );
        let _ = std::io::stderr().flush();
    }

    pub fn advance(&mut self, amount: u64) {
        self.done = (self.done + amount).min(self.total);
        if self.terminal
            && self
                .drawn
                .is_none_or(|t| t.elapsed() >= Duration::from_millis(100))
        {
            self.drawn = Some(Instant::now());
            self.draw();
        }
    }

    pub fn finish(&mut self) {
        self.done = self.total;
        self.draw();
        eprintln!();
    }
}
