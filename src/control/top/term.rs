//! The terminal side of `fastlb top`: raw mode and the alternate screen, key presses,
//! the refresh clock, and putting the terminal back whatever happens (q, Ctrl-C, SIGINT,
//! SIGTERM, SIGHUP, an error, a panic).

use std::io::{self, Stdout};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::crossterm::{cursor, execute, terminal};
use ratatui::Terminal;

use super::fetch;
use super::view::{Key, View};

/// Puts the terminal back as it was: main screen, cooked mode, cursor shown. Safe to call
/// more than once.
fn restore() {
    let _ = terminal::disable_raw_mode();
    let _ = execute!(io::stdout(), terminal::LeaveAlternateScreen, cursor::Show);
}

/// Restores the terminal when dropped, on every way out of [`run`] but a panic (the panic
/// hook does that one, before the message prints, so the message is readable).
struct Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        restore();
    }
}

fn key_of(e: &event::KeyEvent) -> Option<Key> {
    if e.kind == KeyEventKind::Release {
        return None;
    }
    if e.modifiers.contains(KeyModifiers::CONTROL) {
        return matches!(e.code, KeyCode::Char('c') | KeyCode::Char('d')).then_some(Key::Interrupt);
    }
    Some(match e.code {
        KeyCode::Char(c) => Key::Char(c),
        KeyCode::Enter => Key::Enter,
        KeyCode::Esc => Key::Esc,
        KeyCode::Backspace => Key::Backspace,
        _ => return None,
    })
}

/// Runs top against the director at `socket`, reading it every `interval`, until `q`,
/// Ctrl-C or a signal. Fails before touching the terminal if the director cannot be read.
pub fn run(socket: &Path, interval: Duration) -> io::Result<()> {
    let first = fetch(socket)?;
    let mut view = View::new(socket.display().to_string());
    view.update(first, None);
    let mut last = Instant::now();

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore();
        previous(info);
    }));

    terminal::enable_raw_mode()?;
    let _guard = Guard;
    execute!(io::stdout(), terminal::EnterAlternateScreen, cursor::Hide)?;
    let mut term: Terminal<CrosstermBackend<Stdout>> =
        Terminal::new(CrosstermBackend::new(io::stdout()))?;
    term.clear()?;
    let mut dirty = true;
    while !stop.load(Ordering::Relaxed) {
        if dirty {
            term.draw(|f| view.render(f.area(), f.buffer_mut()))?;
            dirty = false;
        }
        // Short polls, so a signal is seen within a tenth of a second.
        let until_refresh = interval.saturating_sub(last.elapsed());
        if event::poll(until_refresh.min(Duration::from_millis(100)))? {
            match event::read()? {
                Event::Key(k) => {
                    if let Some(k) = key_of(&k) {
                        if view.key(k) {
                            break;
                        }
                        dirty = true;
                    }
                }
                Event::Resize(..) => dirty = true,
                _ => {}
            }
        }
        if last.elapsed() >= interval {
            let secs = last.elapsed().as_secs_f64();
            last = Instant::now();
            match fetch(socket) {
                Ok(s) => view.update(s, Some(secs)),
                // Keep the last screen and say why it is not moving.
                Err(e) => view.error = Some(e.to_string()),
            }
            dirty = true;
        }
    }
    Ok(())
}
