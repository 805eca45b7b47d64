//! Editing a YAML file as a person would: change the text of one setting and leave every other
//! line as it was written (comments, key order, quoting, blank lines). A flow edited in the
//! browser must diff against its previous version only where the user changed something, so the
//! file is never re-serialized: each edit finds the setting's text through the parser's marks and
//! replaces just that text, or inserts or removes just the lines of one entry.
//!
//! Block style (`key: value` on its own line, `- item`) is edited in place. A flow-style value
//! (`{a: 1}`, `[1, 2]`) is replaced whole when something inside it changes, written in block
//! style unless it stays empty. New values are written in block style, two spaces a level.

use crate::{limits, Error};
use saphyr::{MarkedYaml, YamlData};
use serde_json::{Map, Value as Json};

/// One step of a path from the document's root to a setting.
#[derive(Clone, Debug, PartialEq)]
pub enum Seg {
    /// A mapping key.
    Key(String),
    /// A sequence item by position (the item's count appends one).
    Index(usize),
    /// The sequence item that is a mapping whose `name` is this (a flow's nodes).
    Named(String),
}

/// A change to one setting.
#[derive(Clone, Debug, PartialEq)]
pub enum Edit {
    /// Set the value at a path, creating the missing mappings on the way (a sequence item at
    /// the sequence's length is appended).
    Set { path: Vec<Seg>, value: Json },
    /// Remove a mapping entry or a sequence item.
    Remove { path: Vec<Seg> },
    /// Rename a mapping key, keeping its value and its place.
    RenameKey { path: Vec<Seg>, to: String },
}

/// Apply edits in order; each sees the text the previous one left.
pub fn apply_all(text: &str, edits: &[Edit]) -> Result<String, Error> {
    edits
        .iter()
        .try_fold(text.to_string(), |text, edit| apply(&text, edit))
}

/// Apply one edit to a YAML text holding one document with a mapping at its root.
pub fn apply(text: &str, edit: &Edit) -> Result<String, Error> {
    let doc = Doc::parse(text)?;
    match edit {
        Edit::Set { path, value } => doc.set(path, value),
        Edit::Remove { path } => doc.remove(path),
        Edit::RenameKey { path, to } => doc.rename_key(path, to),
    }
}

/// Every string scalar in the document with its path: what a rename rewrites references in.
pub fn string_scalars(text: &str) -> Result<Vec<(Vec<Seg>, String)>, Error> {
    let doc = Doc::parse(text)?;
    let mut out = Vec::new();
    collect_strings(&doc.root, &mut Vec::new(), &mut out);
    Ok(out)
}

fn collect_strings(node: &MarkedYaml<'_>, path: &mut Vec<Seg>, out: &mut Vec<(Vec<Seg>, String)>) {
    match &node.data {
        YamlData::Value(saphyr::Scalar::String(s)) => out.push((path.clone(), s.to_string())),
        YamlData::Mapping(map) => {
            for (k, v) in map.iter() {
                path.push(Seg::Key(key_text(k)));
                collect_strings(v, path, out);
                path.pop();
            }
        }
        YamlData::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push(Seg::Index(i));
                collect_strings(item, path, out);
                path.pop();
            }
        }
        YamlData::Tagged(_, inner) => collect_strings(inner, path, out),
        _ => {}
    }
}

fn key_text(k: &MarkedYaml<'_>) -> String {
    match &k.data {
        YamlData::Value(saphyr::Scalar::String(s)) => s.to_string(),
        _ => to_json(k).to_string(),
    }
}

/// Where a value sits, so it can be replaced: as a mapping entry's value (its key known) or as
/// a sequence item (its dash known). `first..=last` are the lines the whole entry or item spans,
/// trailing blank and comment lines excluded.
#[derive(Clone, Copy)]
enum Slot<'n, 'a> {
    Entry {
        key: &'n MarkedYaml<'a>,
        value: &'n MarkedYaml<'a>,
        first: usize,
        last: usize,
    },
    Item {
        value: &'n MarkedYaml<'a>,
        dash: (usize, usize),
        first: usize,
        last: usize,
    },
}

/// A collection reached by a path, and the lines (0-based, inclusive) it may extend to.
struct Place<'n, 'a> {
    node: &'n MarkedYaml<'a>,
    path: Vec<Seg>,
    slot: Option<Slot<'n, 'a>>,
    region: (usize, usize),
}

struct Doc<'a> {
    text: &'a str,
    lines: Vec<&'a str>,
    newline: &'static str,
    root: MarkedYaml<'a>,
}

impl<'a> Doc<'a> {
    fn parse(text: &'a str) -> Result<Self, Error> {
        if let Err((line, message)) = limits::check_yaml_limits(text) {
            return Err(err_at(line, message));
        }
        // The same checks as reading a flow (a repeated key, one document): an edit never
        // starts from a text flowrt would refuse to run.
        crate::parse(text)?;
        let mut loader = saphyr::YamlLoader::<MarkedYaml>::default();
        let mut parser = saphyr_parser::Parser::new_from_str(text);
        parser
            .load(&mut loader, true)
            .map_err(|e| err_at(e.marker().line(), e.info().to_string()))?;
        let root = loader
            .into_documents()
            .into_iter()
            .next()
            .ok_or_else(|| err_at(1, "the file is empty; write a mapping first".into()))?;
        if !matches!(root.data, YamlData::Mapping(_)) || is_flow(text, &root) {
            return Err(err_at(
                1,
                "only a file whose top level is a block mapping (`key: value` lines) can be edited"
                    .into(),
            ));
        }
        let newline = if text.contains("\r\n") { "\r\n" } else { "\n" };
        let mut lines: Vec<&str> = text.split('\n').collect();
        if text.ends_with('\n') {
            lines.pop();
        }
        Ok(Doc {
            text,
            lines,
            newline,
            root,
        })
    }

    fn last_line(&self) -> usize {
        self.lines.len().saturating_sub(1)
    }

    /// The line at `i` without its `\r`.
    fn line(&self, i: usize) -> &'a str {
        self.lines
            .get(i)
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .unwrap_or("")
    }

    fn is_filler(&self, i: usize) -> bool {
        let t = self.line(i).trim();
        t.is_empty() || t.starts_with('#')
    }

    /// `last` moved up past blank and comment lines: those belong to what follows.
    fn trim(&self, first: usize, mut last: usize) -> usize {
        while last > first && self.is_filler(last) {
            last -= 1;
        }
        last
    }

    /// Entries of a block mapping with the lines each spans.
    fn entries<'n>(
        &self,
        node: &'n MarkedYaml<'a>,
        region: (usize, usize),
    ) -> Vec<(&'n MarkedYaml<'a>, &'n MarkedYaml<'a>, usize, usize)> {
        let YamlData::Mapping(map) = &node.data else {
            return Vec::new();
        };
        let pairs: Vec<_> = map.iter().collect();
        pairs
            .iter()
            .enumerate()
            .map(|(i, (k, v))| {
                let first = line0(k);
                let end = pairs
                    .get(i + 1)
                    .map(|(next, _)| line0(next).saturating_sub(1))
                    .unwrap_or(region.1)
                    .max(first);
                (*k, *v, first, self.trim(first, end))
            })
            .collect()
    }

    /// Items of a block sequence with their dash (line, column) and the lines each spans.
    fn items<'n>(
        &self,
        node: &'n MarkedYaml<'a>,
        region: (usize, usize),
    ) -> Vec<(&'n MarkedYaml<'a>, (usize, usize), usize, usize)> {
        let YamlData::Sequence(items) = &node.data else {
            return Vec::new();
        };
        let dashes: Vec<(usize, usize)> = items.iter().map(|i| self.dash_of(i)).collect();
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let first = dashes[i].0;
                let end = dashes
                    .get(i + 1)
                    .map(|d| d.0.saturating_sub(1))
                    .unwrap_or(region.1)
                    .max(first);
                (item, dashes[i], first, self.trim(first, end))
            })
            .collect()
    }

    /// The `-` that introduces a block sequence item: on the item's line before it, or alone on
    /// a line above it.
    fn dash_of(&self, item: &MarkedYaml<'a>) -> (usize, usize) {
        let line = line0(item);
        let before: String = self
            .line(line)
            .chars()
            .take(item.span.start.col())
            .collect();
        if let Some(col) = before.rfind('-') {
            return (line, before[..col].chars().count());
        }
        let mut l = line;
        while l > 0 {
            l -= 1;
            let text = self.line(l);
            if text.trim() == "-" {
                return (l, text.chars().take_while(|c| *c == ' ').count());
            }
            if !self.is_filler(l) {
                break;
            }
        }
        (line, item.span.start.col().saturating_sub(2))
    }

    /// Follow `path` as far as it exists. Returns the deepest collection reached and how many
    /// segments that took.
    fn walk<'n>(&'n self, path: &[Seg]) -> Result<(Place<'n, 'a>, usize), Error> {
        let mut place = Place {
            node: &self.root,
            path: Vec::new(),
            slot: None,
            region: (0, self.last_line()),
        };
        for (depth, seg) in path.iter().enumerate() {
            if is_flow(self.text, place.node) || !is_collection(place.node) {
                return Ok((place, depth));
            }
            let next = match seg {
                Seg::Key(k) => self
                    .entries(place.node, place.region)
                    .into_iter()
                    .find(|(key, ..)| key_text(key) == *k)
                    .map(|(key, value, first, last)| Slot::Entry {
                        key,
                        value,
                        first,
                        last,
                    }),
                Seg::Index(_) | Seg::Named(_) => {
                    let items = self.items(place.node, place.region);
                    let found = match seg {
                        Seg::Index(i) => items.get(*i).copied(),
                        Seg::Named(n) => items.iter().copied().find(|(item, ..)| {
                            to_json(item).get("name").and_then(Json::as_str) == Some(n.as_str())
                        }),
                        Seg::Key(_) => None,
                    };
                    found.map(|(value, dash, first, last)| Slot::Item {
                        value,
                        dash,
                        first,
                        last,
                    })
                }
            };
            let Some(slot) = next else {
                return Ok((place, depth));
            };
            let (value, first, last) = match slot {
                Slot::Entry {
                    value, first, last, ..
                }
                | Slot::Item {
                    value, first, last, ..
                } => (value, first, last),
            };
            let mut path_so_far = place.path.clone();
            path_so_far.push(seg.clone());
            place = Place {
                node: value,
                path: path_so_far,
                slot: Some(slot),
                region: (first, last),
            };
        }
        Ok((place, path.len()))
    }

    fn set(&self, path: &[Seg], value: &Json) -> Result<String, Error> {
        let (place, reached) = self.walk(path)?;
        if reached == path.len() {
            return self.replace(&place, value);
        }
        let rest = &path[reached..];
        if is_flow(self.text, place.node) || !is_collection(place.node) {
            // Inside a flow-style or scalar value: rewrite that value whole.
            let mut whole = to_json(place.node);
            set_json(&mut whole, rest, value.clone(), &place.path)?;
            return self.replace(&place, &whole);
        }
        match &rest[0] {
            Seg::Key(k) => {
                if !matches!(place.node.data, YamlData::Mapping(_)) {
                    return Err(self.not_found(path, reached, "is not a mapping"));
                }
                let nested = nest(&rest[1..], value.clone(), path)?;
                self.insert_entry(&place, k, &nested)
            }
            Seg::Index(i) => {
                let YamlData::Sequence(items) = &place.node.data else {
                    return Err(self.not_found(path, reached, "is not a sequence"));
                };
                if *i != items.len() || rest.len() != 1 {
                    return Err(self.not_found(path, reached + 1, "has no such item"));
                }
                self.append_item(&place, value)
            }
            Seg::Named(_) => Err(self.not_found(path, reached + 1, "has no such item")),
        }
    }

    fn remove(&self, path: &[Seg]) -> Result<String, Error> {
        let (_, parent_path) = path
            .split_last()
            .ok_or_else(|| err_at(1, "the whole document cannot be removed".into()))?;
        let (place, reached) = self.walk(path)?;
        if reached < path.len() {
            let (parent, preached) = self.walk(parent_path)?;
            if preached == parent_path.len() && is_flow(self.text, parent.node) {
                let mut whole = to_json(parent.node);
                remove_json(&mut whole, &path[preached..], path)?;
                return self.replace(&parent, &whole);
            }
            return Err(self.not_found(path, reached, "does not exist"));
        }
        let (parent, _) = self.walk(parent_path)?;
        let siblings = match &parent.node.data {
            YamlData::Mapping(m) => m.len(),
            YamlData::Sequence(s) => s.len(),
            _ => 0,
        };
        if siblings <= 1 && parent.slot.is_some() {
            // The last entry of a nested collection: leave the collection, empty.
            let empty = match parent.node.data {
                YamlData::Sequence(_) => Json::Array(Vec::new()),
                _ => Json::Object(Map::new()),
            };
            return self.replace(&parent, &empty);
        }
        let mut lines = self.owned_lines();
        match place.slot {
            Some(Slot::Entry {
                key, first, last, ..
            }) => {
                let key_col = key.span.start.col();
                let on_dash = self.line(first).chars().take(key_col).any(|c| c == '-');
                if on_dash {
                    // The first entry of a `- key: ...` item: the next entry moves onto the dash.
                    let next_line = last + 1;
                    let next = (next_line..=parent.region.1).find(|l| !self.is_filler(*l));
                    let Some(next) = next else {
                        return Err(err_at(first + 1, "nothing follows to keep the item".into()));
                    };
                    let prefix: String = self.line(first).chars().take(key_col).collect();
                    let rest: String = self.line(next).chars().skip(key_col).collect();
                    lines[next] = format!("{prefix}{rest}");
                    lines.drain(first..next);
                } else {
                    lines.drain(first..=last);
                }
            }
            Some(Slot::Item { first, last, .. }) => {
                lines.drain(first..=last);
            }
            None => return Err(err_at(1, "the whole document cannot be removed".into())),
        }
        Ok(self.join(lines))
    }

    fn rename_key(&self, path: &[Seg], to: &str) -> Result<String, Error> {
        let (place, reached) = self.walk(path)?;
        let Some(Slot::Entry { key, .. }) = place.slot.filter(|_| reached == path.len()) else {
            return Err(self.not_found(path, reached, "is not a key that exists"));
        };
        let (parent, _) = self.walk(&path[..path.len() - 1])?;
        if let YamlData::Mapping(m) = &parent.node.data {
            if m.iter().any(|(k, _)| key_text(k) == to) {
                return Err(err_at(
                    line0(key) + 1,
                    format!("'{to}' is already a key here; pick another name"),
                ));
            }
        }
        if is_flow(self.text, parent.node) {
            let mut whole = to_json(parent.node);
            if let Json::Object(m) = &mut whole {
                let renamed: Map<String, Json> = std::mem::take(m)
                    .into_iter()
                    .map(|(k, v)| {
                        if k == key_text(key) {
                            (to.to_string(), v)
                        } else {
                            (k, v)
                        }
                    })
                    .collect();
                *m = renamed;
            }
            return self.replace(&parent, &whole);
        }
        let mut lines = self.owned_lines();
        let l = line0(key);
        lines[l] = splice(
            self.line(l),
            key.span.start.col(),
            key.span.end.col(),
            &render_key(to),
        );
        Ok(self.join(lines))
    }

    /// Replace the value at `place` with `value`.
    fn replace(&self, place: &Place<'_, 'a>, value: &Json) -> Result<String, Error> {
        let Some(slot) = place.slot else {
            return Err(err_at(1, "the whole document cannot be replaced".into()));
        };
        let (node, first, last) = match slot {
            Slot::Entry {
                value, first, last, ..
            }
            | Slot::Item {
                value, first, last, ..
            } => (value, first, last),
        };
        let mut lines = self.owned_lines();
        // On one line, written inline: replace just its characters (a comment after it stays).
        if let (Some(text), Some((line, start, end))) =
            (render_inline(value), self.inline_span(slot, node))
        {
            lines[line] = splice(self.line(line), start, end, &text);
            return Ok(self.join(lines));
        }
        let (head, indent) = match slot {
            Slot::Entry { key, .. } => {
                let key_line = self.line(line0(key));
                let after_key: String = key_line.chars().skip(key.span.end.col()).collect();
                let colon = after_key
                    .find(':')
                    .map(|c| after_key[..c].chars().count())
                    .unwrap_or(0);
                let head: String = key_line
                    .chars()
                    .take(key.span.end.col() + colon + 1)
                    .collect();
                (head, key.span.start.col())
            }
            Slot::Item { dash, .. } => {
                let head: String = self.line(dash.0).chars().take(dash.1 + 1).collect();
                (head, dash.1)
            }
        };
        let mut new_lines = Vec::new();
        let multiline_text = value
            .as_str()
            .and_then(|s| render_block_string(s, indent + 2));
        match (render_inline(value), multiline_text) {
            (_, Some((indicator, body))) => {
                new_lines.push(format!("{head} {indicator}"));
                new_lines.extend(body);
            }
            (Some(text), None) => new_lines.push(format!("{head} {text}")),
            (None, None) => match slot {
                Slot::Entry { .. } => {
                    new_lines.push(head);
                    block_lines(value, indent + 2, &mut new_lines);
                }
                Slot::Item { .. } => {
                    let mut body = Vec::new();
                    item_lines(value, indent, &mut body);
                    if let Some(first_line) = body.first_mut() {
                        let rest: String = first_line.chars().skip(indent + 1).collect();
                        *first_line = format!("{head}{rest}");
                    }
                    new_lines.extend(body);
                }
            },
        }
        let (first, last) = match slot {
            Slot::Entry { key, .. } => (line0(key), last.max(first)),
            Slot::Item { dash, .. } => (dash.0, last),
        };
        lines.splice(first..=last, new_lines);
        Ok(self.join(lines))
    }

    /// The (line, start column, end column) of a value written on one line after its key or
    /// dash: a plain or quoted scalar, or a flow collection closed on that line.
    fn inline_span(
        &self,
        slot: Slot<'_, 'a>,
        node: &MarkedYaml<'a>,
    ) -> Option<(usize, usize, usize)> {
        let owner_line = match slot {
            Slot::Entry { key, .. } => line0(key),
            Slot::Item { dash, .. } => dash.0,
        };
        let line = line0(node);
        if line != owner_line {
            return None;
        }
        let start = node.span.start.col();
        if is_flow(self.text, node) {
            let end = flow_end(self.line(line), start)?;
            return Some((line, start, end));
        }
        match &node.data {
            YamlData::Value(_) | YamlData::Representation(..) => {}
            _ => return None,
        }
        let first_char = self.line(line).chars().nth(start);
        if node.span.end.line() != node.span.start.line() || matches!(first_char, Some('|' | '>')) {
            return None;
        }
        // An empty value (`key:` then nothing) has no characters to replace.
        if node.span.end.col() <= start {
            return None;
        }
        Some((line, start, node.span.end.col()))
    }

    fn insert_entry(
        &self,
        place: &Place<'_, 'a>,
        key: &str,
        value: &Json,
    ) -> Result<String, Error> {
        let entries = self.entries(place.node, place.region);
        let Some((first_key, ..)) = entries.first() else {
            let mut obj = Map::new();
            obj.insert(key.to_string(), value.clone());
            return self.replace(place, &Json::Object(obj));
        };
        let indent = first_key.span.start.col();
        let after = entries.last().map(|e| e.3).unwrap_or(place.region.1);
        let mut new_lines = Vec::new();
        entry_lines(key, value, indent, &mut new_lines);
        let mut lines = self.owned_lines();
        let at = (after + 1).min(lines.len());
        lines.splice(at..at, new_lines);
        Ok(self.join(lines))
    }

    fn append_item(&self, place: &Place<'_, 'a>, value: &Json) -> Result<String, Error> {
        let items = self.items(place.node, place.region);
        let Some((_, dash, ..)) = items.first() else {
            return self.replace(place, &Json::Array(vec![value.clone()]));
        };
        let after = items.last().map(|i| i.3).unwrap_or(place.region.1);
        let mut new_lines = Vec::new();
        item_lines(value, dash.1, &mut new_lines);
        let mut lines = self.owned_lines();
        let at = (after + 1).min(lines.len());
        lines.splice(at..at, new_lines);
        Ok(self.join(lines))
    }

    fn owned_lines(&self) -> Vec<String> {
        (0..self.lines.len())
            .map(|i| self.line(i).to_string())
            .collect()
    }

    fn join(&self, lines: Vec<String>) -> String {
        let mut out = lines.join(self.newline);
        if self.text.ends_with('\n') || self.text.is_empty() {
            out.push_str(self.newline);
        }
        out
    }

    fn not_found(&self, path: &[Seg], reached: usize, what: &str) -> Error {
        err_at(
            1,
            format!(
                "{} {what}",
                show_path(&path[..reached.min(path.len()).max(1)])
            ),
        )
    }
}

/// A path as a person reads it: `nodes[summarize].inputs.temperature`.
pub fn show_path(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
            Seg::Named(n) => out.push_str(&format!("[{n}]")),
        }
    }
    out
}

fn err_at(line: usize, message: String) -> Error {
    Error {
        line: line.max(1),
        column: 1,
        message,
    }
}

fn line0(node: &MarkedYaml<'_>) -> usize {
    node.span.start.line().saturating_sub(1)
}

fn is_collection(node: &MarkedYaml<'_>) -> bool {
    matches!(node.data, YamlData::Mapping(_) | YamlData::Sequence(_))
}

/// Whether a collection is written in flow style (`{...}` / `[...]`).
fn is_flow(text: &str, node: &MarkedYaml<'_>) -> bool {
    if !is_collection(node) {
        return false;
    }
    let line = text.split('\n').nth(line0(node)).unwrap_or("");
    matches!(line.chars().nth(node.span.start.col()), Some('{' | '['))
}

/// The column after the bracket that closes the flow collection opening at `start`, when it
/// closes on the same line.
fn flow_end(line: &str, start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut chars = line.chars().enumerate().skip(start).peekable();
    while let Some((i, c)) = chars.next() {
        match (quote, c) {
            (Some('"'), '\\') => {
                chars.next();
            }
            (Some(q), c) if c == q => {
                // `''` inside single quotes is an escaped quote.
                if q == '\'' && chars.peek().map(|(_, n)| *n) == Some('\'') {
                    chars.next();
                } else {
                    quote = None;
                }
            }
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '[' | '{') => depth += 1,
            (None, ']' | '}') => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

fn splice(line: &str, start: usize, end: usize, with: &str) -> String {
    let head: String = line.chars().take(start).collect();
    let tail: String = line.chars().skip(end).collect();
    format!("{head}{with}{tail}")
}

/// A value as a person would write it on the rest of a line, when it fits there: scalars and
/// empty collections.
fn render_inline(value: &Json) -> Option<String> {
    match value {
        Json::Null => Some("null".into()),
        Json::Bool(b) => Some(b.to_string()),
        Json::Number(n) => Some(n.to_string()),
        Json::String(s) if s.contains('\n') => None,
        Json::String(s) => Some(render_string(s)),
        Json::Array(a) if a.is_empty() => Some("[]".into()),
        Json::Object(o) if o.is_empty() => Some("{}".into()),
        _ => None,
    }
}

/// A one-line string plain when YAML reads it back as the same string, double-quoted otherwise
/// (JSON's escapes are YAML's).
fn render_string(s: &str) -> String {
    let plain_reads_back = !s.is_empty()
        && s.len() <= 1024
        && matches!(
            crate::parse(&format!("k: {s}\n")).map(|n| n.get("k").map(|v| v.value.clone())),
            Ok(Some(crate::Value::String(ref back))) if back == s
        );
    if plain_reads_back {
        s.to_string()
    } else {
        serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
    }
}

fn render_key(k: &str) -> String {
    render_string(k)
}

/// A multi-line string as a literal block (`|`): its indicator and its lines at `indent`.
/// `None` when a literal block cannot hold it exactly (leading spaces on its first line, tabs,
/// or carriage returns); it is then written double-quoted.
fn render_block_string(s: &str, indent: usize) -> Option<(String, Vec<String>)> {
    if !s.contains('\n') || s.contains('\r') || s.contains('\t') || s.starts_with([' ', '\n']) {
        return None;
    }
    let body = s.trim_end_matches('\n');
    let trailing = s.len() - body.len();
    let chomp = match trailing {
        0 => "-",
        1 => "",
        _ => "+",
    };
    let pad = " ".repeat(indent);
    let mut lines: Vec<String> = body
        .split('\n')
        .map(|l| {
            if l.is_empty() {
                String::new()
            } else {
                format!("{pad}{l}")
            }
        })
        .collect();
    for _ in 1..trailing {
        lines.push(String::new());
    }
    Some((format!("|{chomp}"), lines))
}

/// `key: value` at `indent`, block style.
fn entry_lines(key: &str, value: &Json, indent: usize, out: &mut Vec<String>) {
    let pad = " ".repeat(indent);
    let key = render_key(key);
    if let Some((indicator, body)) = value
        .as_str()
        .and_then(|s| render_block_string(s, indent + 2))
    {
        out.push(format!("{pad}{key}: {indicator}"));
        out.extend(body);
    } else if let Some(text) = render_inline(value) {
        out.push(format!("{pad}{key}: {text}"));
    } else if value.as_str().is_some() {
        out.push(format!(
            "{pad}{key}: {}",
            serde_json::to_string(value).unwrap_or_default()
        ));
    } else {
        out.push(format!("{pad}{key}:"));
        block_lines(value, indent + 2, out);
    }
}

/// A collection's entries or items at `indent`.
fn block_lines(value: &Json, indent: usize, out: &mut Vec<String>) {
    match value {
        Json::Object(map) => {
            for (k, v) in map {
                entry_lines(k, v, indent, out);
            }
        }
        Json::Array(items) => {
            for item in items {
                item_lines(item, indent, out);
            }
        }
        other => out.push(format!(
            "{}{}",
            " ".repeat(indent),
            render_inline(other)
                .unwrap_or_else(|| serde_json::to_string(other).unwrap_or_default())
        )),
    }
}

/// `- item` with its dash at `indent`; a mapping's first entry goes on the dash's line.
fn item_lines(value: &Json, indent: usize, out: &mut Vec<String>) {
    let pad = " ".repeat(indent);
    if let Some((indicator, body)) = value
        .as_str()
        .and_then(|s| render_block_string(s, indent + 2))
    {
        out.push(format!("{pad}- {indicator}"));
        out.extend(body);
        return;
    }
    if let Some(text) = render_inline(value) {
        out.push(format!("{pad}- {text}"));
        return;
    }
    if let Json::String(s) = value {
        out.push(format!(
            "{pad}- {}",
            serde_json::to_string(s).unwrap_or_default()
        ));
        return;
    }
    let mut body = Vec::new();
    block_lines(value, indent + 2, &mut body);
    for (i, line) in body.into_iter().enumerate() {
        if i == 0 {
            let rest: String = line.chars().skip(indent + 2).collect();
            out.push(format!("{pad}- {rest}"));
        } else {
            out.push(line);
        }
    }
}

fn to_json(node: &MarkedYaml<'_>) -> Json {
    match &node.data {
        YamlData::Value(s) => match s {
            saphyr::Scalar::Null => Json::Null,
            saphyr::Scalar::Boolean(b) => Json::Bool(*b),
            saphyr::Scalar::Integer(i) => Json::from(*i),
            saphyr::Scalar::FloatingPoint(f) => serde_json::Number::from_f64(f.into_inner())
                .map(Json::Number)
                .unwrap_or(Json::Null),
            saphyr::Scalar::String(s) => Json::String(s.to_string()),
        },
        YamlData::Representation(t, _, _) => Json::String(t.to_string()),
        YamlData::Sequence(items) => Json::Array(items.iter().map(to_json).collect()),
        YamlData::Mapping(map) => {
            Json::Object(map.iter().map(|(k, v)| (key_text(k), to_json(v))).collect())
        }
        YamlData::Tagged(_, inner) => to_json(inner),
        _ => Json::Null,
    }
}

/// `{rest...: value}`: the mappings a set creates on its way.
fn nest(rest: &[Seg], value: Json, whole: &[Seg]) -> Result<Json, Error> {
    rest.iter().rev().try_fold(value, |inner, seg| match seg {
        Seg::Key(k) => {
            let mut m = Map::new();
            m.insert(k.clone(), inner);
            Ok(Json::Object(m))
        }
        _ => Err(err_at(1, format!("{} does not exist", show_path(whole)))),
    })
}

fn set_json(target: &mut Json, rest: &[Seg], value: Json, at: &[Seg]) -> Result<(), Error> {
    let Some((seg, tail)) = rest.split_first() else {
        *target = value;
        return Ok(());
    };
    let missing = || err_at(1, format!("{} has no {}", show_path(at), show_path(rest)));
    match (seg, target) {
        (Seg::Key(k), Json::Object(m)) => {
            if tail.is_empty() {
                m.insert(k.clone(), value);
                Ok(())
            } else {
                let child = m
                    .entry(k.clone())
                    .or_insert_with(|| Json::Object(Map::new()));
                set_json(child, tail, value, at)
            }
        }
        (Seg::Key(k), t @ Json::Null) => {
            *t = nest(rest, value, at)?;
            let _ = k;
            Ok(())
        }
        (Seg::Index(i), Json::Array(a)) if *i == a.len() && tail.is_empty() => {
            a.push(value);
            Ok(())
        }
        (Seg::Index(i), Json::Array(a)) => {
            let child = a.get_mut(*i).ok_or_else(missing)?;
            set_json(child, tail, value, at)
        }
        (Seg::Named(n), Json::Array(a)) => {
            let child = a
                .iter_mut()
                .find(|i| i.get("name").and_then(Json::as_str) == Some(n.as_str()))
                .ok_or_else(missing)?;
            set_json(child, tail, value, at)
        }
        _ => Err(missing()),
    }
}

fn remove_json(target: &mut Json, rest: &[Seg], whole: &[Seg]) -> Result<(), Error> {
    let missing = || err_at(1, format!("{} does not exist", show_path(whole)));
    let Some((seg, tail)) = rest.split_first() else {
        return Err(missing());
    };
    match (seg, target, tail.is_empty()) {
        (Seg::Key(k), Json::Object(m), true) => m.shift_remove(k).map(|_| ()).ok_or_else(missing),
        (Seg::Index(i), Json::Array(a), true) if *i < a.len() => {
            a.remove(*i);
            Ok(())
        }
        (Seg::Named(n), Json::Array(a), true) => {
            let before = a.len();
            a.retain(|i| i.get("name").and_then(Json::as_str) != Some(n.as_str()));
            if a.len() == before {
                Err(missing())
            } else {
                Ok(())
            }
        }
        (Seg::Key(k), Json::Object(m), false) => {
            remove_json(m.get_mut(k).ok_or_else(missing)?, tail, whole)
        }
        (Seg::Index(i), Json::Array(a), false) => {
            remove_json(a.get_mut(*i).ok_or_else(missing)?, tail, whole)
        }
        (Seg::Named(n), Json::Array(a), false) => {
            let child = a
                .iter_mut()
                .find(|i| i.get("name").and_then(Json::as_str) == Some(n.as_str()))
                .ok_or_else(missing)?;
            remove_json(child, tail, whole)
        }
        _ => Err(missing()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const FLOW: &str = "\
# A flow with comments that must survive edits.
$schema: https://azuremlschemas.azureedge.net/promptflow/latest/Flow.schema.json
inputs:
  url:
    type: string   # what to classify
    default: https://www.microsoft.com/en-us/d/xbox-wireless-controller-stellar-shift-special-edition/94fbjc7h0h6h
  empty: {}
outputs:
  category:
    type: string
    reference: ${convert_to_dict.output.category}
nodes:
- name: fetch_text_content_from_url
  type: python
  source:
    type: code
    path: fetch_text_content_from_url.py
  inputs:
    url: ${inputs.url}
- name: summarize_text_content
  type: llm
  source:
    type: code
    path: summarize_text_content.jinja2
  inputs:
    # the model's deployment
    deployment_name: gpt-35-turbo
    max_tokens: 128
    temperature: 0.2
    text: ${fetch_text_content_from_url.output}
  connection: open_ai_connection
  api: chat

- name: convert_to_dict
  type: python
  source: {type: code, path: convert_to_dict.py}
  inputs:
    input_str: ${summarize_text_content.output}
";

    fn key(k: &str) -> Seg {
        Seg::Key(k.into())
    }

    fn node(n: &str) -> Seg {
        Seg::Named(n.into())
    }

    /// Lines that differ between two texts, as (removed, added).
    fn changed(before: &str, after: &str) -> (Vec<String>, Vec<String>) {
        let b: Vec<&str> = before.lines().collect();
        let a: Vec<&str> = after.lines().collect();
        let removed = b
            .iter()
            .filter(|l| !a.contains(l))
            .map(|l| l.to_string())
            .collect();
        let added = a
            .iter()
            .filter(|l| !b.contains(l))
            .map(|l| l.to_string())
            .collect();
        (removed, added)
    }

    fn set(text: &str, path: Vec<Seg>, value: Json) -> String {
        let out = apply(text, &Edit::Set { path, value }).expect("edit applies");
        crate::parse(&out).expect("the edited text parses");
        out
    }

    #[test]
    fn setting_a_scalar_changes_only_its_characters() {
        let out = set(
            FLOW,
            vec![
                key("nodes"),
                node("summarize_text_content"),
                key("inputs"),
                key("temperature"),
            ],
            json!(0.7),
        );
        assert_eq!(
            changed(FLOW, &out),
            (
                vec!["    temperature: 0.2".into()],
                vec!["    temperature: 0.7".into()]
            )
        );
        // A trailing comment stays where it was.
        let out = set(
            FLOW,
            vec![key("inputs"), key("url"), key("type")],
            json!("int"),
        );
        assert!(
            out.contains("    type: int   # what to classify\n"),
            "{out}"
        );
    }

    #[test]
    fn strings_are_quoted_only_when_plain_would_read_differently() {
        let path = vec![
            key("nodes"),
            node("summarize_text_content"),
            key("inputs"),
            key("deployment_name"),
        ];
        assert!(set(FLOW, path.clone(), json!("gpt-4o")).contains("deployment_name: gpt-4o\n"));
        assert!(set(FLOW, path.clone(), json!("true")).contains("deployment_name: \"true\"\n"));
        assert!(
            set(FLOW, path.clone(), json!("a: b # c")).contains("deployment_name: \"a: b # c\"\n")
        );
        assert!(set(FLOW, path, json!("")).contains("deployment_name: \"\"\n"));
    }

    #[test]
    fn a_new_key_is_added_after_its_siblings_at_their_indentation() {
        let out = set(
            FLOW,
            vec![
                key("nodes"),
                node("summarize_text_content"),
                key("inputs"),
                key("top_p"),
            ],
            json!(0.9),
        );
        assert_eq!(changed(FLOW, &out), (vec![], vec!["    top_p: 0.9".into()]));
        assert!(out.contains(
            "    text: ${fetch_text_content_from_url.output}\n    top_p: 0.9\n  connection"
        ));
        // A missing mapping on the way is created.
        let out = set(
            FLOW,
            vec![
                key("nodes"),
                node("convert_to_dict"),
                key("activate"),
                key("when"),
            ],
            json!("${inputs.url}"),
        );
        assert!(out.ends_with("    input_str: ${summarize_text_content.output}\n  activate:\n    when: ${inputs.url}\n"), "{out}");
    }

    #[test]
    fn flow_style_values_are_rewritten_whole_in_block_style() {
        let out = set(
            FLOW,
            vec![
                key("nodes"),
                node("convert_to_dict"),
                key("source"),
                key("path"),
            ],
            json!("to_dict.py"),
        );
        assert!(
            out.contains("  source:\n    type: code\n    path: to_dict.py\n  inputs:"),
            "{out}"
        );
        let out = set(
            FLOW,
            vec![key("inputs"), key("empty"), key("type")],
            json!("string"),
        );
        assert!(
            out.contains("  empty:\n    type: string\noutputs:"),
            "{out}"
        );
    }

    #[test]
    fn a_node_appended_reads_as_the_others_do() {
        let out = set(
            FLOW,
            vec![key("nodes"), Seg::Index(3)],
            json!({"name": "echo", "type": "python", "source": {"type": "code", "path": "echo.py"}, "inputs": {"text": "${convert_to_dict.output}"}}),
        );
        assert!(changed(FLOW, &out).0.is_empty());
        assert!(out.ends_with("- name: echo\n  type: python\n  source:\n    type: code\n    path: echo.py\n  inputs:\n    text: ${convert_to_dict.output}\n"), "{out}");
    }

    #[test]
    fn removing_keeps_comments_and_neighbours() {
        let out = apply(
            FLOW,
            &Edit::Remove {
                path: vec![
                    key("nodes"),
                    node("summarize_text_content"),
                    key("inputs"),
                    key("max_tokens"),
                ],
            },
        )
        .expect("removes");
        assert_eq!(
            changed(FLOW, &out),
            (vec!["    max_tokens: 128".into()], vec![])
        );
        // A whole node, with the blank line after it kept for the next.
        let out = apply(
            FLOW,
            &Edit::Remove {
                path: vec![key("nodes"), node("summarize_text_content")],
            },
        )
        .expect("removes");
        assert!(!out.contains("summarize_text_content.jinja2"));
        assert!(
            out.contains("    url: ${inputs.url}\n\n- name: convert_to_dict"),
            "{out}"
        );
        // The first key of an item: the next one moves onto the dash.
        let out = apply(
            FLOW,
            &Edit::Remove {
                path: vec![key("nodes"), node("convert_to_dict"), key("name")],
            },
        )
        .expect("removes");
        assert!(
            out.contains("\n- type: python\n  source: {type: code"),
            "{out}"
        );
        // Inside a flow mapping.
        let out = apply(
            FLOW,
            &Edit::Remove {
                path: vec![
                    key("nodes"),
                    node("convert_to_dict"),
                    key("source"),
                    key("type"),
                ],
            },
        )
        .expect("removes");
        assert!(
            out.contains("  source:\n    path: convert_to_dict.py\n"),
            "{out}"
        );
    }

    #[test]
    fn the_last_entry_removed_leaves_an_empty_mapping() {
        let out = apply(
            FLOW,
            &Edit::Remove {
                path: vec![
                    key("nodes"),
                    node("fetch_text_content_from_url"),
                    key("inputs"),
                    key("url"),
                ],
            },
        )
        .expect("removes");
        assert!(
            out.contains(
                "    path: fetch_text_content_from_url.py\n  inputs: {}\n- name: summarize"
            ),
            "{out}"
        );
    }

    #[test]
    fn renaming_a_key_keeps_its_value_and_place() {
        let out = apply(
            FLOW,
            &Edit::RenameKey {
                path: vec![key("inputs"), key("url")],
                to: "link".into(),
            },
        )
        .expect("renames");
        assert_eq!(
            changed(FLOW, &out),
            (vec!["  url:".into()], vec!["  link:".into()])
        );
        let refused = apply(
            FLOW,
            &Edit::RenameKey {
                path: vec![key("inputs"), key("url")],
                to: "empty".into(),
            },
        );
        assert!(refused.is_err_and(|e| e.message.contains("already a key")));
    }

    #[test]
    fn multi_line_strings_become_literal_blocks_and_back() {
        let path = vec![
            key("nodes"),
            node("summarize_text_content"),
            key("inputs"),
            key("text"),
        ];
        let out = set(FLOW, path.clone(), json!("line one\nline two\n"));
        assert!(
            out.contains("    text: |\n      line one\n      line two\n  connection"),
            "{out}"
        );
        let back = set(&out, path.clone(), json!("short"));
        assert!(back.contains("    text: short\n  connection"), "{back}");
        let doc = crate::parse(&set(FLOW, path, json!("a\n\nb"))).expect("parses");
        assert_eq!(
            doc.get("nodes").and_then(|n| n.as_sequence()).map(|n| n[1]
                .get("inputs")
                .and_then(|i| i.get("text"))
                .map(|t| t.to_json())),
            Some(Some(json!("a\n\nb")))
        );
    }

    #[test]
    fn crlf_files_keep_their_line_endings() {
        let text = FLOW.replace('\n', "\r\n");
        let out = set(
            &text,
            vec![key("inputs"), key("url"), key("default")],
            json!("x"),
        );
        assert!(out.contains("    default: x\r\n"));
        assert_eq!(out.matches('\n').count(), out.matches("\r\n").count());
    }

    #[test]
    fn bad_paths_and_texts_are_refused_with_a_reason() {
        let e = apply(
            FLOW,
            &Edit::Set {
                path: vec![key("nodes"), node("nope"), key("x")],
                value: json!(1),
            },
        )
        .expect_err("no such node");
        assert!(e.message.contains("nodes[nope]"), "{e}");
        let e = apply(
            "[1, 2]\n",
            &Edit::Set {
                path: vec![key("a")],
                value: json!(1),
            },
        )
        .expect_err("not a mapping");
        assert!(e.message.contains("block mapping"), "{e}");
        let e = apply(
            "a: 1\na: 2\n",
            &Edit::Set {
                path: vec![key("a")],
                value: json!(1),
            },
        )
        .expect_err("repeated");
        assert!(e.message.contains("twice"), "{e}");
    }

    #[test]
    fn string_scalars_are_listed_with_their_paths() {
        let all = string_scalars(FLOW).expect("parses");
        assert!(all.contains(&(
            vec![key("outputs"), key("category"), key("reference")],
            "${convert_to_dict.output.category}".to_string()
        )));
        assert!(all.contains(&(
            vec![key("nodes"), Seg::Index(2), key("inputs"), key("input_str")],
            "${summarize_text_content.output}".to_string()
        )));
    }
}
