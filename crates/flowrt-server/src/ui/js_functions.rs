//! The functions of the UI's JavaScript and how many lines each spans, for the test that keeps
//! every page function short enough to read at once (`ui.rs`).
//!
//! Not a parser, and it needs none: the UI is plain, formatted ES modules. Strings, template
//! literals, regular expressions and comments are blanked first (their braces and quotes are not
//! code), then brackets match by counting. A function is
//! - a `function` declaration or expression (top-level or nested),
//! - an arrow function (`const name = (...) => ...`, or passed along as a callback), whose body is
//!   a block or one expression,
//! - a method (`name(...) { ... }` in a class or an object literal).
//!
//! Its length counts the lines from the one it starts on to the one it ends on, both included.

/// One function found: its name (`(anonymous)` when it has none), first line (1-based) and
/// length in lines.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Func {
    pub name: String,
    pub line: usize,
    pub lines: usize,
}

/// Every function in `src`, in the order they start.
pub(super) fn functions(src: &str) -> Vec<Func> {
    let code = blank(src.as_bytes());
    let toks = tokens(&code);
    let mut found = Vec::new();
    for i in 0..toks.len() {
        let f = match toks[i].text {
            "function" => declared(&toks, i),
            "=>" => arrow(&toks, i),
            _ => method(&toks, i),
        };
        found.extend(f);
    }
    found.sort_by_key(|f| f.line);
    found
}

/// What a `{` was opened by: code, or a template literal's `${`.
#[derive(PartialEq)]
enum Frame {
    Brace,
    Template,
}

/// Keywords after which a `/` starts a regular expression (after other words it divides).
const BEFORE_EXPRESSION: &[&str] = &[
    "return",
    "typeof",
    "instanceof",
    "in",
    "of",
    "new",
    "delete",
    "void",
    "throw",
    "case",
    "do",
    "else",
    "yield",
    "await",
];

/// `src` with every literal and comment blanked: a string, template or regex becomes `0` and
/// spaces (a value, so what follows reads as it did; a template ends in `0` too), a comment spaces; newlines stay, so lines
/// keep their numbers. A template's `${ ... }` stays code, between `(` and `)`.
fn blank(src: &[u8]) -> Vec<u8> {
    let mut b = Blanker {
        src,
        out: src.to_vec(),
        stack: Vec::new(),
        in_template: false,
        value_before: false,
    };
    let mut i = 0;
    while i < src.len() {
        i = if b.in_template {
            b.template(i)
        } else {
            b.code(i)
        };
    }
    b.out
}

struct Blanker<'a> {
    src: &'a [u8],
    out: Vec<u8>,
    /// The open `{` and `${`, innermost last.
    stack: Vec<Frame>,
    in_template: bool,
    /// Whether the code so far ends in a value: then a `/` divides, else it starts a regex.
    value_before: bool,
}

impl Blanker<'_> {
    /// Reads the template literal's text at `i`; returns where to go on.
    fn template(&mut self, i: usize) -> usize {
        match (self.src[i], self.src.get(i + 1)) {
            (b'\\', _) => {
                wipe(&mut self.out, i, i + 2);
                i + 2
            }
            (b'`', _) => {
                // A value again, on the template's last line: an arrow returning it ends there.
                self.out[i] = b'0';
                self.in_template = false;
                self.value_before = true;
                i + 1
            }
            (b'$', Some(b'{')) => {
                self.out[i] = b' ';
                self.out[i + 1] = b'(';
                self.stack.push(Frame::Template);
                self.in_template = false;
                self.value_before = false;
                i + 2
            }
            _ => {
                wipe(&mut self.out, i, i + 1);
                i + 1
            }
        }
    }

    /// Reads the code at `i`, blanking the literal or comment that starts there; returns where
    /// to go on.
    fn code(&mut self, i: usize) -> usize {
        let src = self.src;
        let c = src[i];
        let literal = |me: &mut Self, end: usize| {
            wipe(&mut me.out, i, end);
            me.out[i] = b'0';
            me.value_before = true;
            end
        };
        match (c, src.get(i + 1)) {
            (b'/', Some(b'/')) => {
                let end = find(src, i, b"\n");
                wipe(&mut self.out, i, end);
                end
            }
            (b'/', Some(b'*')) => {
                let end = find(src, i + 2, b"*/") + 2;
                wipe(&mut self.out, i, end);
                end
            }
            (b'/', _) if !self.value_before => literal(self, regex_end(src, i)),
            (b'\'' | b'"', _) => literal(self, string_end(src, i)),
            (b'`', _) => {
                self.out[i] = b'0';
                self.in_template = true;
                i + 1
            }
            (b'{', _) => {
                self.stack.push(Frame::Brace);
                self.value_before = false;
                i + 1
            }
            (b'}', _) => {
                if self.stack.pop() == Some(Frame::Template) {
                    self.out[i] = b')';
                    self.in_template = true;
                }
                self.value_before = false;
                i + 1
            }
            _ if is_word(c) => {
                let end = (i..src.len())
                    .find(|&j| !is_word(src[j]))
                    .unwrap_or(src.len());
                let word = std::str::from_utf8(&src[i..end]).unwrap_or("");
                self.value_before = !BEFORE_EXPRESSION.contains(&word);
                end
            }
            _ if c.is_ascii_whitespace() => i + 1,
            _ => {
                // After `)` or `]` a `/` divides; after an operator it starts a regex.
                self.value_before = c == b')' || c == b']';
                i + 1
            }
        }
    }
}

/// Spaces over `out[from..to]`, newlines kept.
fn wipe(out: &mut [u8], from: usize, to: usize) {
    let to = to.min(out.len());
    for b in &mut out[from..to] {
        if *b != b'\n' {
            *b = b' ';
        }
    }
}

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$'
}

/// Where `pat` starts at or after `from` (the end of `src` when it does not occur).
fn find(src: &[u8], from: usize, pat: &[u8]) -> usize {
    (from..src.len())
        .find(|&j| src[j..].starts_with(pat))
        .unwrap_or(src.len())
}

/// Just past the quote that closes the string opened at `start`.
fn string_end(src: &[u8], start: usize) -> usize {
    let mut j = start + 1;
    while j < src.len() && src[j] != src[start] && src[j] != b'\n' {
        j += if src[j] == b'\\' { 2 } else { 1 };
    }
    j + 1
}

/// Just past the flags of the regular expression opened at `start` (a `/` in a `[...]` class
/// does not close it).
fn regex_end(src: &[u8], start: usize) -> usize {
    let mut j = start + 1;
    let mut class = false;
    while j < src.len() && src[j] != b'\n' {
        match src[j] {
            b'\\' => j += 1,
            b'[' => class = true,
            b']' => class = false,
            b'/' if !class => break,
            _ => {}
        }
        j += 1;
    }
    j += 1;
    while j < src.len() && src[j].is_ascii_alphabetic() {
        j += 1;
    }
    j
}

struct Tok<'a> {
    text: &'a str,
    line: usize,
}

/// The blanked code as words, `=>`, and single punctuation characters, each with its line.
fn tokens(code: &[u8]) -> Vec<Tok<'_>> {
    let text = |a: usize, b: usize| std::str::from_utf8(&code[a..b]).unwrap_or("");
    let mut toks = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < code.len() {
        let c = code[i];
        let end = if c == b'\n' {
            line += 1;
            i += 1;
            continue;
        } else if c.is_ascii_whitespace() || !c.is_ascii() {
            i += 1;
            continue;
        } else if is_word(c) {
            (i..code.len())
                .find(|&j| !is_word(code[j]))
                .unwrap_or(code.len())
        } else if code[i..].starts_with(b"=>") {
            i + 2
        } else {
            i + 1
        };
        toks.push(Tok {
            text: text(i, end),
            line,
        });
        i = end;
    }
    toks
}

fn opens(t: &str) -> bool {
    matches!(t, "(" | "[" | "{")
}

fn closes(t: &str) -> bool {
    matches!(t, ")" | "]" | "}")
}

/// The index of the bracket that closes the one at `open`.
fn close_of(toks: &[Tok], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (j, t) in toks.iter().enumerate().skip(open) {
        if opens(t.text) {
            depth += 1;
        } else if closes(t.text) {
            depth -= 1;
            if depth == 0 {
                return Some(j);
            }
        }
    }
    None
}

/// The index of the bracket that opens the one closed at `close`.
fn open_of(toks: &[Tok], close: usize) -> Option<usize> {
    let mut depth = 0usize;
    for j in (0..=close).rev() {
        if closes(toks[j].text) {
            depth += 1;
        } else if opens(toks[j].text) {
            depth -= 1;
            if depth == 0 {
                return Some(j);
            }
        }
    }
    None
}

/// The last token of an arrow function's expression body starting at `from`: up to a `;` or
/// `,` outside brackets, or the bracket that closes around the arrow.
fn expression_end(toks: &[Tok], from: usize) -> usize {
    let mut depth = 0usize;
    for (j, t) in toks.iter().enumerate().skip(from) {
        if opens(t.text) {
            depth += 1;
        } else if closes(t.text) {
            if depth == 0 {
                return j - 1;
            }
            depth -= 1;
        } else if depth == 0 && matches!(t.text, ";" | ",") {
            return j - 1;
        }
    }
    toks.len() - 1
}

fn is_name(t: &str) -> bool {
    t.bytes()
        .next()
        .is_some_and(|c| is_word(c) && !c.is_ascii_digit())
}

/// The name a function expression starting at token `at` is given, and the token its
/// definition starts at: `const name = ...`, `name = ...`, `name: ...`, else none.
fn binding(toks: &[Tok], at: usize) -> (String, usize) {
    let t = |k: usize| at.checked_sub(k).map_or("", |j| toks[j].text);
    if (t(1) == "=" || t(1) == ":") && is_name(t(2)) {
        let start = if matches!(t(3), "const" | "let" | "var") {
            at - 3
        } else {
            at - 2
        };
        return (t(2).to_string(), start);
    }
    ("(anonymous)".to_string(), at)
}

fn span(name: String, toks: &[Tok], start: usize, end: usize) -> Func {
    Func {
        name,
        line: toks[start].line,
        lines: toks[end].line - toks[start].line + 1,
    }
}

/// `function name(...) { ... }`, `function* name`, or an anonymous `function (...) { ... }`.
fn declared(toks: &[Tok], at: usize) -> Option<Func> {
    let mut j = at + 1;
    if toks.get(j)?.text == "*" {
        j += 1;
    }
    let (name, start) = if is_name(toks.get(j)?.text) {
        j += 1;
        (toks[j - 1].text.to_string(), at)
    } else {
        binding(toks, at)
    };
    let body = close_of(toks, j)? + 1;
    (toks.get(body)?.text == "{").then_some(())?;
    Some(span(name, toks, start, close_of(toks, body)?))
}

/// `(a, b) => ...`, `a => ...`, `async (...) => ...`, with a block or an expression body.
fn arrow(toks: &[Tok], at: usize) -> Option<Func> {
    let before = at.checked_sub(1)?;
    let mut params = if toks[before].text == ")" {
        open_of(toks, before)?
    } else {
        before
    };
    if params > 0 && toks[params - 1].text == "async" {
        params -= 1;
    }
    let (name, start) = binding(toks, params);
    let body = at + 1;
    let end = if toks.get(body)?.text == "{" {
        close_of(toks, body)?
    } else {
        expression_end(toks, body)
    };
    Some(span(name, toks, start, end))
}

/// Words followed by `(...) {` that start a statement, not a method.
const STATEMENTS: &[&str] = &[
    "if", "for", "while", "switch", "catch", "with", "function", "return",
];

/// A method: `name(...) { ... }` in a class or object literal (`async`, `get`, `static` may come
/// before the name). A call is never followed by a block, so a name, its parameters and a `{`
/// are a method wherever they stand.
fn method(toks: &[Tok], at: usize) -> Option<Func> {
    let name = toks[at].text;
    if !is_name(name) || STATEMENTS.contains(&name) || toks.get(at + 1)?.text != "(" {
        return None;
    }
    let prev = |k: usize| at.checked_sub(k).map_or("", |j| toks[j].text);
    if prev(1) == "function" || prev(1) == "." || (prev(1) == "*" && prev(2) == "function") {
        return None;
    }
    let body = close_of(toks, at + 1)? + 1;
    (toks.get(body)?.text == "{").then_some(())?;
    Some(span(name.to_string(), toks, at, close_of(toks, body)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(src: &str) -> Vec<(String, usize, usize)> {
        functions(src)
            .into_iter()
            .map(|f| (f.name, f.line, f.lines))
            .collect()
    }

    #[test]
    fn finds_declarations_arrows_and_methods_with_their_lengths() {
        let src = "\
export async function page({ main }) {
  const draw = (x) => {
    return x;
  };
  const label = (s) => h('span', {},
    s);
  items.forEach((i) => { use(i); });
  function inner() { return 1; }
}
class Page {
  constructor(a) {
    this.a = a;
  }
  async start() { await go(); }
}
const auth = { get token() { return 1; }, go: function () {
} };
";
        assert_eq!(
            found(src),
            [
                ("page".into(), 1, 9),
                ("draw".into(), 2, 3),
                ("label".into(), 5, 2),
                ("(anonymous)".into(), 7, 1),
                ("inner".into(), 8, 1),
                ("constructor".into(), 11, 3),
                ("start".into(), 14, 1),
                ("token".into(), 16, 1),
                ("go".into(), 16, 2),
            ]
        );
    }

    #[test]
    fn literals_and_comments_do_not_count_as_code() {
        // Braces, quotes and slashes inside strings, templates, regexes and comments.
        let src = r#"function a() {
  const s = '}{"' + "'}" + `}${ {x: `{${'}'}`} }{`;
  // } a comment's brace
  /* } { */
  const r = /[/}"']\{/g.test(s) ? 1 / 2 : s.replace(/^"|"$/g, '');
  return typeof /}/ === 'object';
}
const b = () => `
}`;
"#;
        assert_eq!(
            found(src),
            [("a".into(), 1, 7), ("b".into(), 8, 2)],
            "{:?}",
            String::from_utf8_lossy(&blank(src.as_bytes()))
        );
    }

    #[test]
    fn a_long_function_is_counted_whole() {
        let body = "  step();\n".repeat(60);
        let src = format!("export function long() {{\n{body}}}\nconst short = () => 1;\n");
        assert_eq!(
            found(&src),
            [("long".into(), 1, 62), ("short".into(), 63, 1)]
        );
    }
}
