//! `fastlb top`'s screen as a pure function: snapshots and key presses in, a ratatui
//! [`Buffer`] out. No terminal here (that is `term.rs`), so the screen is unit tested.

use std::collections::{BTreeMap, HashMap, VecDeque};

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Row, Table, Widget};

use super::snapshot::{RealRow, ServiceRow, Snapshot, Totals};

/// How many refreshes a sparkline shows.
pub const HISTORY: usize = 20;

/// What the rows are sorted by (`s` cycles, `r` reverses).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum SortKey {
    /// The order the director lists them in (configuration order).
    #[default]
    Config,
    /// Active connections.
    Active,
    /// New connections per second.
    Cps,
    /// Packets per second, in and out.
    Pps,
    /// Bytes per second, in and out.
    Bps,
}

impl SortKey {
    /// The next key in the cycle.
    pub fn next(self) -> SortKey {
        match self {
            SortKey::Config => SortKey::Active,
            SortKey::Active => SortKey::Cps,
            SortKey::Cps => SortKey::Pps,
            SortKey::Pps => SortKey::Bps,
            SortKey::Bps => SortKey::Config,
        }
    }

    /// Its name on the screen.
    pub fn name(self) -> &'static str {
        match self {
            SortKey::Config => "config",
            SortKey::Active => "active",
            SortKey::Cps => "conn/s",
            SortKey::Pps => "pkt/s",
            SortKey::Bps => "byte/s",
        }
    }
}

/// A key press, as top understands it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Key {
    /// A printable character.
    Char(char),
    /// Enter.
    Enter,
    /// Escape.
    Esc,
    /// Backspace.
    Backspace,
    /// Ctrl-C (raw mode delivers it as a key, not as SIGINT).
    Interrupt,
}

/// Per-second rates between two snapshots.
#[derive(Copy, Clone, Debug, Default, PartialEq)]
pub struct Rate {
    /// Connections per second.
    pub cps: f64,
    /// Packets per second from clients.
    pub in_pps: f64,
    /// Packets per second to clients.
    pub out_pps: f64,
    /// Bytes per second from clients.
    pub in_bps: f64,
    /// Bytes per second to clients.
    pub out_bps: f64,
}

impl Rate {
    fn between(old: &Totals, new: &Totals, secs: f64) -> Rate {
        // A counter that went down was zeroed (`ctl -Z`): no rate this time.
        let d = |o: u64, n: u64| n.saturating_sub(o) as f64 / secs;
        Rate {
            cps: d(old.conns, new.conns),
            in_pps: d(old.in_pkts, new.in_pkts),
            out_pps: d(old.out_pkts, new.out_pkts),
            in_bps: d(old.in_bytes, new.in_bytes),
            out_bps: d(old.out_bytes, new.out_bytes),
        }
    }

    fn pps(&self) -> f64 {
        self.in_pps + self.out_pps
    }

    fn bps(&self) -> f64 {
        self.in_bps + self.out_bps
    }
}

/// Everything on the screen: the newest snapshot, rates against the one before, history,
/// and the operator's sort and filter.
#[derive(Debug, Default)]
pub struct View {
    /// Shown in the title line (the socket path).
    pub title: String,
    /// The newest snapshot.
    pub snapshot: Snapshot,
    /// Rates per row key (`service` or `service|real`).
    rates: HashMap<String, Rate>,
    /// Packets per second (in + out) per row key, oldest first.
    history: HashMap<String, VecDeque<f64>>,
    /// Drops per second by reason.
    drop_rates: BTreeMap<String, f64>,
    /// Frames per second received, transmitted and passed, summed over workers.
    frames: (f64, f64, f64),
    /// Sort key.
    pub sort: SortKey,
    /// Smallest first instead of largest first (for `config`: the reverse order).
    pub reverse: bool,
    /// Case-insensitive text a service or real server must contain to be shown.
    pub filter: String,
    /// The filter being typed after `/`, until Enter or Esc.
    pub editing: Option<String>,
    /// The last failure to read the director (the screen keeps the last snapshot).
    pub error: Option<String>,
}

fn real_key(service: &str, real: &str) -> String {
    format!("{service}|{real}")
}

impl View {
    /// A view titled `title`, with nothing read yet.
    pub fn new(title: impl Into<String>) -> View {
        View {
            title: title.into(),
            ..View::default()
        }
    }

    /// Takes a new snapshot, `secs` seconds after the one before (`None` for the first):
    /// rates are the differences per second, and each row's history gains a sample.
    pub fn update(&mut self, next: Snapshot, secs: Option<f64>) {
        self.error = None;
        let secs = secs.filter(|s| *s > 0.0);
        let old = std::mem::replace(&mut self.snapshot, next);
        let Some(secs) = secs else {
            return;
        };
        let mut old_totals: HashMap<String, Totals> = HashMap::new();
        for s in &old.services {
            old_totals.insert(s.service.clone(), s.totals);
            for r in &s.reals {
                old_totals.insert(real_key(&s.service, &r.real), r.totals);
            }
        }
        let mut rates = HashMap::new();
        for s in &self.snapshot.services {
            let mut rows = vec![(s.service.clone(), s.totals)];
            rows.extend(
                s.reals
                    .iter()
                    .map(|r| (real_key(&s.service, &r.real), r.totals)),
            );
            for (key, totals) in rows {
                let rate = old_totals
                    .get(&key)
                    .map(|o| Rate::between(o, &totals, secs))
                    .unwrap_or_default();
                let h = self.history.entry(key.clone()).or_default();
                h.push_back(rate.pps());
                while h.len() > HISTORY {
                    h.pop_front();
                }
                rates.insert(key, rate);
            }
        }
        self.history.retain(|k, _| rates.contains_key(k));
        self.rates = rates;
        self.drop_rates = self
            .snapshot
            .drops
            .iter()
            .map(|(reason, n)| {
                let before = old.drops.get(reason).copied().unwrap_or(*n);
                (reason.clone(), n.saturating_sub(before) as f64 / secs)
            })
            .collect();
        let sum = |s: &Snapshot, f: fn(&super::snapshot::WorkerRow) -> u64| -> u64 {
            s.workers.iter().map(f).sum()
        };
        let per_sec = |f: fn(&super::snapshot::WorkerRow) -> u64| {
            sum(&self.snapshot, f).saturating_sub(sum(&old, f)) as f64 / secs
        };
        self.frames = (per_sec(|w| w.rx), per_sec(|w| w.tx), per_sec(|w| w.passed));
    }

    /// The rate of a row (zero until the second snapshot).
    pub fn rate(&self, service: &str, real: Option<&str>) -> Rate {
        let key = match real {
            Some(r) => real_key(service, r),
            None => service.to_string(),
        };
        self.rates.get(&key).copied().unwrap_or_default()
    }

    /// Handles a key press; true when top should quit.
    pub fn key(&mut self, key: Key) -> bool {
        if let Some(text) = &mut self.editing {
            match key {
                Key::Char(c) => text.push(c),
                Key::Backspace => {
                    text.pop();
                }
                Key::Enter => self.filter = self.editing.take().unwrap_or_default(),
                Key::Esc => {
                    self.editing = None;
                    self.filter.clear();
                }
                Key::Interrupt => return true,
            }
            return false;
        }
        match key {
            Key::Char('q') | Key::Interrupt => return true,
            Key::Char('s') => self.sort = self.sort.next(),
            Key::Char('r') => self.reverse = !self.reverse,
            Key::Char('/') => self.editing = Some(String::new()),
            Key::Esc => self.filter.clear(),
            _ => {}
        }
        false
    }

    fn sort_value(&self, service: &str, real: Option<&RealRow>) -> f64 {
        let rate = self.rate(service, real.map(|r| r.real.as_str()));
        match self.sort {
            SortKey::Config => 0.0,
            SortKey::Active => match real {
                Some(r) => f64::from(r.active),
                None => self
                    .snapshot
                    .services
                    .iter()
                    .find(|s| s.service == service)
                    .map_or(0.0, |s| s.reals.iter().map(|r| f64::from(r.active)).sum()),
            },
            SortKey::Cps => rate.cps,
            SortKey::Pps => rate.pps(),
            SortKey::Bps => rate.bps(),
        }
    }

    /// The rows to show, sorted and filtered: each service with the real servers shown
    /// under it (all of them when the service itself matches the filter).
    pub fn rows(&self) -> Vec<(&ServiceRow, Vec<&RealRow>)> {
        let filter = self.filter.to_lowercase();
        let matches = |text: &str| filter.is_empty() || text.to_lowercase().contains(&filter);
        let order = |a: f64, b: f64| {
            let o = b.total_cmp(&a); // largest first
            if self.reverse {
                o.reverse()
            } else {
                o
            }
        };
        let mut out: Vec<(&ServiceRow, Vec<&RealRow>)> = self
            .snapshot
            .services
            .iter()
            .filter_map(|s| {
                let whole = matches(&format!("{} {}", s.service, s.scheduler));
                let mut reals: Vec<&RealRow> = s
                    .reals
                    .iter()
                    .filter(|r| whole || matches(&r.real))
                    .collect();
                if !whole && reals.is_empty() {
                    return None;
                }
                // A stable sort: ties keep the director's order.
                reals.sort_by(|a, b| {
                    order(
                        self.sort_value(&s.service, Some(a)),
                        self.sort_value(&s.service, Some(b)),
                    )
                });
                Some((s, reals))
            })
            .collect();
        out.sort_by(|a, b| {
            order(
                self.sort_value(&a.0.service, None),
                self.sort_value(&b.0.service, None),
            )
        });
        if self.reverse && self.sort == SortKey::Config {
            out.reverse();
            for (_, reals) in &mut out {
                reals.reverse();
            }
        }
        out
    }

    /// The sparkline of a row's packets per second, newest on the right.
    pub fn sparkline(&self, service: &str, real: Option<&str>) -> String {
        let key = match real {
            Some(r) => real_key(service, r),
            None => service.to_string(),
        };
        self.history.get(&key).map_or_else(String::new, |h| {
            sparkline(&h.iter().copied().collect::<Vec<_>>())
        })
    }

    /// Draws the whole screen into `buf` over `area`.
    pub fn render(&self, area: Rect, buf: &mut Buffer) {
        if area.height < 4 || area.width < 20 {
            Paragraph::new("fastlb top: window too small").render(area, buf);
            return;
        }
        let s = &self.snapshot;
        let bold = Style::default().add_modifier(Modifier::BOLD);
        let title = Line::from(vec![
            Span::styled("fastlb top", bold),
            Span::raw(format!(
                "  {}  generation {}  workers {}  frames rx {}/s tx {}/s passed {}/s",
                self.title,
                s.generation,
                s.workers.len(),
                human(self.frames.0),
                human(self.frames.1),
                human(self.frames.2),
            )),
        ]);
        let help = match &self.editing {
            Some(text) => Line::from(vec![
                Span::styled(format!("filter: {text}_"), bold),
                Span::raw("   Enter apply  Esc clear"),
            ]),
            None => Line::from(format!(
                "sort: {}{}  filter: {}   s sort  r reverse  / filter  Esc clear  q quit",
                self.sort.name(),
                if self.reverse { " (reversed)" } else { "" },
                if self.filter.is_empty() {
                    "(none)"
                } else {
                    &self.filter
                },
            )),
        };
        let mut lines = vec![title, help];
        if let Some(e) = &self.error {
            lines.push(Line::styled(
                format!("error: {e}"),
                Style::default().fg(Color::Red),
            ));
        }
        let head = lines.len() as u16;
        Paragraph::new(lines).render(
            Rect {
                height: head,
                ..area
            },
            buf,
        );

        let drops: Vec<(&String, &u64)> = s.drops.iter().filter(|(_, n)| **n > 0).collect();
        let drops_height =
            (drops.len().max(1) as u16 + 2).min(area.height.saturating_sub(head + 3));
        let table_area = Rect {
            y: area.y + head,
            height: area.height - head - drops_height,
            ..area
        };
        self.table().render(table_area, buf);

        let drop_lines: Vec<Line> = if drops.is_empty() {
            vec![Line::from("no drops")]
        } else {
            drops
                .iter()
                .map(|(reason, n)| {
                    Line::from(format!(
                        "{:<24} {:>9}/s {:>12} total",
                        reason,
                        human(self.drop_rates.get(*reason).copied().unwrap_or(0.0)),
                        n
                    ))
                })
                .collect()
        };
        Paragraph::new(drop_lines)
            .block(
                Block::default()
                    .borders(Borders::TOP)
                    .title("Drops by reason"),
            )
            .render(
                Rect {
                    y: table_area.y + table_area.height,
                    height: drops_height,
                    ..area
                },
                buf,
            );
    }

    fn table(&self) -> Table<'_> {
        let header = Row::new([
            "SERVICE / REAL",
            "FWD",
            "WEIGHT",
            "HEALTH",
            "ACTIVE",
            "INACT",
            "PERSIST",
            "CONN/s",
            "INPKT/s",
            "OUTPKT/s",
            "INB/s",
            "OUTB/s",
            "PKT/s HISTORY",
        ])
        .style(Style::default().add_modifier(Modifier::REVERSED));
        let mut rows = Vec::new();
        for (s, reals) in self.rows() {
            let rate = self.rate(&s.service, None);
            let sum = |f: fn(&RealRow) -> u32| s.reals.iter().map(f).sum::<u32>().to_string();
            let checked: Vec<bool> = s.reals.iter().filter_map(|r| r.healthy).collect();
            let health = if checked.is_empty() {
                "-".to_string()
            } else {
                format!(
                    "{}/{} up",
                    checked.iter().filter(|u| **u).count(),
                    checked.len()
                )
            };
            let mut cells = vec![
                format!("{} {}", s.service, s.scheduler),
                String::new(),
                String::new(),
                health,
                sum(|r| r.active),
                sum(|r| r.inactive),
                sum(|r| r.persistent),
            ];
            cells.extend(rate_cells(&rate));
            cells.push(self.sparkline(&s.service, None));
            rows.push(Row::new(cells).style(Style::default().add_modifier(Modifier::BOLD)));
            for r in reals {
                let rate = self.rate(&s.service, Some(&r.real));
                let mut health = match r.healthy {
                    None => "-".to_string(),
                    Some(true) => "up".to_string(),
                    Some(false) => "DOWN".to_string(),
                };
                if r.overloaded {
                    health += " OVL";
                }
                let mut cells = vec![
                    format!("  -> {}", r.real),
                    r.forward.clone(),
                    if r.in_table {
                        r.weight.to_string()
                    } else {
                        "-".to_string()
                    },
                    health,
                    r.active.to_string(),
                    r.inactive.to_string(),
                    r.persistent.to_string(),
                ];
                cells.extend(rate_cells(&rate));
                cells.push(self.sparkline(&s.service, Some(&r.real)));
                let style = if r.healthy == Some(false) {
                    Style::default().fg(Color::Red)
                } else {
                    Style::default()
                };
                rows.push(Row::new(cells).style(style));
            }
        }
        // Room for `  -> [2001:db8:1234:5678::10]:8080`; the history takes what is left.
        let widths = [
            Constraint::Length(36),
            Constraint::Length(6),
            Constraint::Length(6),
            Constraint::Length(8),
            Constraint::Length(7),
            Constraint::Length(7),
            Constraint::Length(7),
            Constraint::Length(7),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(7),
            Constraint::Length(7),
            Constraint::Min(HISTORY as u16),
        ];
        Table::new(rows, widths)
            .header(header)
            .column_spacing(1)
            .block(
                Block::default()
                    .borders(Borders::TOP)
                    .title("Services and real servers"),
            )
    }
}

fn rate_cells(r: &Rate) -> [String; 5] {
    [r.cps, r.in_pps, r.out_pps, r.in_bps, r.out_bps].map(human)
}

/// A number the way top prints rates: `950`, `12.3K`, `4.5M`, `1.2G`.
pub fn human(v: f64) -> String {
    if v < 1000.0 {
        format!("{v:.0}")
    } else if v < 1e6 {
        format!("{:.1}K", v / 1e3)
    } else if v < 1e9 {
        format!("{:.1}M", v / 1e6)
    } else {
        format!("{:.1}G", v / 1e9)
    }
}

/// Block characters scaled to the largest sample: zero is `▁`, the largest `█`.
pub fn sparkline(samples: &[f64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = samples.iter().copied().fold(0.0, f64::max);
    samples
        .iter()
        .map(|v| {
            if max <= 0.0 || *v <= 0.0 {
                BARS[0]
            } else {
                // 1..=7: any traffic shows above the zero bar.
                BARS[1 + ((v / max) * 6.0).round() as usize]
            }
        })
        .collect()
}

/// The screen as text, one line per row, trailing blanks cut: for tests.
pub fn screen_text(view: &View, width: u16, height: u16) -> String {
    let area = Rect::new(0, 0, width, height);
    let mut buf = Buffer::empty(area);
    view.render(area, &mut buf);
    let mut out = String::new();
    for y in 0..height {
        let mut line = String::new();
        for x in 0..width {
            line.push_str(buf[(x, y)].symbol());
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
