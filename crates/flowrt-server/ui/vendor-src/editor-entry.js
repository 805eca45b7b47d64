// Source of ../js/vendor/codemirror.js, the code editor of the flowrt web UI (rebuild with
// `sh build.sh`, see README.md). It exports one function, createEditor; the UI's own modules
// should need nothing of CodeMirror beyond what it returns.
import { EditorState } from '@codemirror/state';
import {
  EditorView, keymap, lineNumbers, highlightActiveLine, highlightActiveLineGutter,
  highlightSpecialChars,
} from '@codemirror/view';
import {
  StreamLanguage, syntaxHighlighting, defaultHighlightStyle, bracketMatching, indentOnInput,
  indentUnit,
} from '@codemirror/language';
import { history, historyKeymap, defaultKeymap, indentWithTab } from '@codemirror/commands';
import { search, searchKeymap, highlightSelectionMatches } from '@codemirror/search';
// The bare LR languages rather than python()/yaml()/json(): those wrappers add autocompletion
// sources that this editor does not use, and would pull @codemirror/autocomplete into the bundle.
import { pythonLanguage } from '@codemirror/lang-python';
import { yamlLanguage } from '@codemirror/lang-yaml';
import { jsonLanguage } from '@codemirror/lang-json';

// ---- Jinja (prompt-flow templates) ----------------------------------------------------------
// A small stream tokenizer: plain text, the three Jinja delimiters ({{ }}, {% %}, {# #}) with the
// expressions inside them, and prompt-flow's chat role lines ("# system:", "# user:", ...).
// Token names are @lezer/highlight tag names, styled by the default highlight style.

const JINJA_KEYWORDS = new Set([
  'if', 'elif', 'else', 'endif', 'for', 'endfor', 'in', 'not', 'and', 'or', 'is', 'set',
  'endset', 'macro', 'endmacro', 'call', 'endcall', 'filter', 'endfilter', 'block', 'endblock',
  'extends', 'include', 'import', 'from', 'as', 'with', 'without', 'context', 'raw', 'endraw',
  'recursive', 'ignore', 'missing', 'do', 'continue', 'break', 'autoescape', 'endautoescape',
]);
const JINJA_ATOMS = new Set(['true', 'false', 'none', 'True', 'False', 'None']);
const ROLE_LINE = /^\s*#\s*(system|user|assistant|function|tool)\s*:/i;
const CLOSERS = { expr: /^-?\}\}/, stmt: /^-?%\}/ };

const jinjaLanguage = StreamLanguage.define({
  name: 'jinja',
  startState: () => ({ inside: null, depth: 0, afterPipe: false, afterDot: false }),
  copyState: (s) => ({ ...s }),
  token(stream, state) {
    if (state.inside === 'comment') {
      while (!stream.eol()) {
        if (stream.match(/^-?#\}/)) { state.inside = null; break; }
        stream.next();
      }
      return 'comment';
    }
    if (state.inside) return insideTag(stream, state);

    if (stream.sol() && stream.match(ROLE_LINE)) return 'heading keyword';
    if (stream.match(/^\{#-?/)) { state.inside = 'comment'; return 'comment'; }
    if (stream.match(/^\{\{-?/)) { enter(state, 'expr'); return 'macroName'; }
    if (stream.match(/^\{%-?/)) { enter(state, 'stmt'); return 'macroName'; }
    // Plain text up to the next possible delimiter (a lone "{" is text too).
    if (!stream.match(/^[^{]+/)) stream.next();
    return null;
  },
  languageData: { commentTokens: { block: { open: '{#', close: '#}' } } },
});

function enter(state, kind) {
  state.inside = kind;
  state.depth = 0;
  state.afterPipe = false;
  state.afterDot = false;
}

function insideTag(stream, state) {
  if (stream.eatSpace()) return null;
  if (!state.depth && stream.match(CLOSERS[state.inside])) {
    state.inside = null;
    return 'macroName';
  }
  const pipe = state.afterPipe, dot = state.afterDot;
  state.afterPipe = state.afterDot = false;
  if (stream.match(/^"(?:[^"\\]|\\.)*"?/) || stream.match(/^'(?:[^'\\]|\\.)*'?/)) return 'string';
  if (stream.match(/^\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/)) return 'number';
  const word = stream.match(/^[A-Za-z_][A-Za-z0-9_]*/);
  if (word) {
    const w = word[0];
    if (pipe) return 'variableName.definition'; // a filter: {{ x | upper }}
    if (dot) return 'propertyName';
    if (JINJA_ATOMS.has(w)) return 'bool';
    if (JINJA_KEYWORDS.has(w)) return 'keyword';
    return 'variableName.local';
  }
  const ch = stream.next();
  if (ch === '|') { state.afterPipe = true; return 'operator'; }
  if (ch === '.') { state.afterDot = true; return 'punctuation'; }
  if (ch === '{') state.depth++;
  else if (ch === '}' && state.depth) state.depth--;
  if ('()[]{}'.includes(ch)) return 'bracket';
  if (',:'.includes(ch)) return 'punctuation';
  return 'operator';
}

// ---- Look -----------------------------------------------------------------------------------
// Colours fall back to the values of the UI's app.css variables; CSS custom properties inherit
// into the editor's shadow root, so the page's variables win when they are set.
const lightTheme = EditorView.theme({
  '&': {
    fontSize: '13px',
    color: 'var(--fg, #16191d)',
    backgroundColor: 'var(--card, #fff)',
    border: '1px solid var(--line, #d3d8de)',
    borderRadius: '6px',
    maxHeight: '60vh',
  },
  '&.cm-focused': { outline: '3px solid var(--focus, #f59e0b)', outlineOffset: '2px' },
  '.cm-scroller': {
    fontFamily: 'ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace',
    lineHeight: '1.5',
    overflow: 'auto',
  },
  '.cm-content, .cm-gutter': { minHeight: '12em' },
  '.cm-content': { caretColor: 'var(--fg, #16191d)' },
  '.cm-cursor, .cm-dropCursor': { borderLeftColor: 'var(--fg, #16191d)' },
  '.cm-gutters': {
    backgroundColor: 'var(--bg, #f6f7f9)',
    color: 'var(--muted, #505862)',
    borderRight: '1px solid var(--line, #d3d8de)',
    borderRadius: '6px 0 0 6px',
  },
  '.cm-activeLine': { backgroundColor: '#eef3fb' },
  '.cm-activeLineGutter': { backgroundColor: '#e3ecfa', color: 'var(--fg, #16191d)' },
  '&:not(.cm-focused) .cm-activeLine, &:not(.cm-focused) .cm-activeLineGutter': {
    backgroundColor: 'transparent',
  },
  '&.cm-focused .cm-matchingBracket': { backgroundColor: '#cfe3cf', outline: '1px solid #7fa67f' },
  '&.cm-focused .cm-nonmatchingBracket': { backgroundColor: '#f4caca' },
  '.cm-selectionMatch': { backgroundColor: '#e2e8c8' },
  '.cm-searchMatch': { backgroundColor: '#fde68a', outline: '1px solid #d4a514' },
  '.cm-searchMatch.cm-searchMatch-selected': { backgroundColor: '#fbbf24' },
  '.cm-panels': {
    backgroundColor: 'var(--bg, #f6f7f9)',
    color: 'var(--fg, #16191d)',
    fontFamily: 'system-ui, -apple-system, "Segoe UI", Roboto, sans-serif',
  },
  '.cm-panels.cm-panels-top': { borderBottom: '1px solid var(--line, #d3d8de)' },
  '.cm-panels.cm-panels-bottom': { borderTop: '1px solid var(--line, #d3d8de)' },
  '.cm-panel input:focus-visible, .cm-panel button:focus-visible': {
    outline: '3px solid var(--focus, #f59e0b)', outlineOffset: '1px',
  },
}, { dark: false });

// ---- The editor -----------------------------------------------------------------------------

const LANGUAGES = {
  python: () => [pythonLanguage, indentUnit.of('    ')],
  yaml: () => [yamlLanguage],
  json: () => [jsonLanguage],
  jinja: () => [jinjaLanguage, EditorView.lineWrapping],
  text: () => [EditorView.lineWrapping],
};

/**
 * Create a code editor in `parent`.
 *
 * The editor lives in an open shadow root on a `<div class="cm-host">` appended to `parent`.
 * That is what keeps it working under the UI's `style-src 'self'` policy: CodeMirror (through
 * style-mod) installs its CSS with a `<style>` element when mounted in a document, which the
 * policy blocks, but with a constructable stylesheet (adoptedStyleSheets, allowed) when mounted
 * in a shadow root.
 *
 * @param {object} o
 * @param {HTMLElement} o.parent
 * @param {string} [o.doc]
 * @param {'python'|'yaml'|'jinja'|'json'|'text'} [o.language]
 * @param {boolean} [o.readOnly]
 * @param {string} [o.label] the accessible name of the editing area
 * @param {(text: string) => void} [o.onChange] called after each change the user makes
 *   (typing, paste, undo, replace...), not after setValue
 */
export function createEditor({
  parent, doc = '', language = 'text', readOnly = false, label = 'Code', onChange = null,
}) {
  const lang = LANGUAGES[language];
  if (!lang) throw new Error(`createEditor: unknown language ${language}`);

  const extensions = [
    lineNumbers(),
    highlightActiveLineGutter(),
    highlightActiveLine(),
    highlightSpecialChars(),
    history(),
    indentOnInput(),
    bracketMatching(),
    highlightSelectionMatches(),
    search({ top: true }),
    syntaxHighlighting(defaultHighlightStyle, { fallback: true }),
    // Keyboard accessibility with indentWithTab: Tab indents, but Escape followed by Tab (or
    // Shift-Tab) moves focus out of the editor — @codemirror/view turns on "tab focus mode" for
    // two seconds after Escape — and Ctrl-m (Shift-Alt-m on macOS, in defaultKeymap) toggles that
    // mode for good. CodeMirror announces none of this, so pages should say it in help text.
    keymap.of([...searchKeymap, ...historyKeymap, ...defaultKeymap, indentWithTab]),
    EditorView.contentAttributes.of({ 'aria-label': label }),
    lightTheme,
    lang(),
  ];
  if (readOnly) {
    extensions.push(
      EditorState.readOnly.of(true),
      EditorView.editable.of(false),
      // A non-editable content element is not focusable by itself; keep it reachable with the
      // keyboard so it can be scrolled, selected, copied and searched.
      EditorView.contentAttributes.of({ tabindex: '0' }),
    );
  }
  if (onChange) {
    extensions.push(EditorView.updateListener.of((update) => {
      if (update.docChanged) onChange(update.state.doc.toString());
    }));
  }

  const host = document.createElement('div');
  host.className = 'cm-host';
  parent.appendChild(host);
  const root = host.attachShadow({ mode: 'open' });
  const view = new EditorView({
    parent: root,
    root,
    state: EditorState.create({ doc, extensions }),
  });

  return {
    view,
    getValue: () => view.state.doc.toString(),
    // Replaces the document with a fresh state (same configuration): the undo history starts
    // over and onChange is not called (setState runs no update listeners).
    setValue(text) {
      text = String(text ?? '');
      if (text === view.state.doc.toString()) return;
      const head = view.state.selection.main.head;
      const fresh = EditorState.create({ doc: text, extensions });
      view.setState(fresh.update({ selection: { anchor: Math.min(head, fresh.doc.length) } }).state);
    },
    focus: () => view.focus(),
    destroy() {
      view.destroy();
      host.remove();
    },
  };
}
