//! All tracing output of this process, captured so that it can be searched: a global
//! subscriber at TRACE, without colours, installed by the first test that asks for it and
//! shared by every later one (a process has one global subscriber, for the rest of its life).

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

/// The captured output.
#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    /// The process's capture: installs the global subscriber writing into it on the first call;
    /// later calls (from other tests) get the same capture, with everything logged since.
    pub fn install() -> Capture {
        static INSTALLED: OnceLock<Capture> = OnceLock::new();
        INSTALLED
            .get_or_init(|| {
                let capture = Capture::default();
                let writer = capture.clone();
                tracing::subscriber::set_global_default(
                    tracing_subscriber::fmt()
                        .with_max_level(tracing::Level::TRACE)
                        .with_ansi(false)
                        .with_writer(move || writer.clone())
                        .finish(),
                )
                .expect("no other global subscriber in this process");
                capture
            })
            .clone()
    }

    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
