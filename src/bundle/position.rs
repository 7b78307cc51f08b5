//! Where each node of a YAML file is: `path → line:column`, so that a validation error
//! found after parsing still names the file, line and column, as a compiler does.
//!
//! Paths look like `resources.jobs.kafka_stream_job.tasks[2].depends_on[0].task_key`.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Positions of the nodes of one YAML document.
#[derive(Debug, Default, Clone)]
pub struct Positions {
    at: HashMap<String, (usize, usize)>,
}

enum Frame {
    /// A mapping: the path, and the key whose value comes next (if one is pending).
    Map(String, Option<String>),
    /// A sequence: the path and the index of the next item.
    Seq(String, usize),
}

#[derive(Default)]
struct Indexer {
    stack: Vec<Frame>,
    at: HashMap<String, (usize, usize)>,
}

impl Indexer {
    /// The path of the node starting now, advancing the parent's state; `None` when the
    /// node is a mapping key.
    fn next_path(&mut self, scalar: Option<&str>) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Seq(path, i)) => {
                let p = format!("{path}[{i}]");
                *i += 1;
                Some(p)
            }
            Some(Frame::Map(path, pending)) => match pending.take() {
                Some(key) => Some(if path.is_empty() {
                    key
                } else {
                    format!("{path}.{key}")
                }),
                None => {
                    *pending = Some(scalar.unwrap_or_default().to_string());
                    None
                }
            },
        }
    }
}

impl MarkedEventReceiver for Indexer {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = (mark.line(), mark.col() + 1);
        match ev {
            Event::Scalar(value, ..) => {
                if let Some(path) = self.next_path(Some(&value)) {
                    self.at.insert(path, pos);
                } else if let Some(Frame::Map(path, Some(key))) = self.stack.last() {
                    // Keep the key's own position until its value says otherwise.
                    let p = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    self.at.insert(p, pos);
                }
            }
            Event::MappingStart(..) => {
                let path = self.next_path(None).unwrap_or_default();
                self.at.entry(path.clone()).or_insert(pos);
                self.stack.push(Frame::Map(path, None));
            }
            Event::SequenceStart(..) => {
                let path = self.next_path(None).unwrap_or_default();
                self.at.entry(path.clone()).or_insert(pos);
                self.stack.push(Frame::Seq(path, 0));
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

impl Positions {
    /// Indexes `text`; a text that does not parse gives no positions (serde reports why).
    pub fn index(text: &str) -> Self {
        let mut indexer = Indexer::default();
        let mut parser = Parser::new_from_str(text);
        if parser.load(&mut indexer, false).is_err() {
            return Positions::default();
        }
        Positions { at: indexer.at }
    }

    /// `line:column` of the node at `path`, or of its nearest ancestor that is known.
    pub fn of(&self, path: &str) -> (usize, usize) {
        let mut p = path.to_string();
        loop {
            if let Some(&at) = self.at.get(&p) {
                return at;
            }
            match p.rfind(['.', '[']) {
                Some(i) => p.truncate(i),
                None => return (1, 1),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_paths_have_their_lines() {
        let text = "a:\n  b: 1\n  list:\n    - x: 2\n      y: [3, 4]\n    - z\nc: \"q\"\n";
        let p = Positions::index(text);
        assert_eq!(p.of("a.b"), (2, 6));
        assert_eq!(p.of("a.list[0].x"), (4, 10));
        assert_eq!(p.of("a.list[0].y[1]"), (5, 14));
        assert_eq!(p.of("a.list[1]"), (6, 7));
        assert_eq!(p.of("c"), (7, 4));
        // Unknown paths fall back to the nearest known ancestor.
        assert_eq!(p.of("a.list[0].missing").0, 4);
    }
}
