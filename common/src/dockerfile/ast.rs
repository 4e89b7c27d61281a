//! The Dockerfile parse tree, shaped like BuildKit's `parser.Node`.
//!
//! The root node has an empty `value` and one child per instruction. An
//! instruction node's `value` is the keyword as written (case kept), its
//! `flags` are the leading `--name=value` builder flags, and its arguments are
//! the `next` list. ONBUILD's single argument has an empty value and one
//! child: the nested instruction.

/// One node of the parse tree.
///
/// `Clone` and `Debug` walk the `next` chain in a loop rather than by
/// recursion, so an instruction with thousands of arguments cannot exhaust a
/// thread's stack.
#[derive(Default, PartialEq, Eq)]
pub struct Node {
    /// Keyword (instruction nodes) or argument text (argument nodes).
    pub value: String,
    /// The following argument; arguments form a singly linked list.
    pub next: Option<Box<Node>>,
    /// Instructions (root) or the nested instruction (ONBUILD's argument).
    pub children: Vec<Node>,
    /// Builder flags such as `--from=build`, in order.
    pub flags: Vec<String>,
    /// True when the arguments came from the JSON (exec) form.
    pub json: bool,
    /// The instruction's text as written, continuations joined.
    pub original: String,
    /// Heredocs attached to this instruction, in order.
    pub heredocs: Vec<Heredoc>,
    /// 1-based first physical line.
    pub start_line: usize,
    /// 1-based last physical line (heredoc bodies included).
    pub end_line: usize,
    /// Comment lines directly before the instruction, without the `#`.
    pub prev_comment: Vec<String>,
}

impl Clone for Node {
    fn clone(&self) -> Self {
        let mut head = self.clone_without_next();
        let mut tail = &mut head.next;
        let mut cur = self.next.as_deref();
        while let Some(n) = cur {
            let slot = tail.insert(Box::new(n.clone_without_next()));
            tail = &mut slot.next;
            cur = n.next.as_deref();
        }
        head
    }
}

/// Debug view of one node with its `next` chain shown as a flat list.
struct Chain<'a>(Option<&'a Node>);

impl std::fmt::Debug for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut list = f.debug_list();
        let mut cur = self.0;
        while let Some(n) = cur {
            list.entry(&Shallow(n));
            cur = n.next.as_deref();
        }
        list.finish()
    }
}

/// Debug view of one node without its `next` chain.
struct Shallow<'a>(&'a Node);

impl std::fmt::Debug for Shallow<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0;
        f.debug_struct("Node")
            .field("value", &n.value)
            .field("children", &n.children)
            .field("flags", &n.flags)
            .field("json", &n.json)
            .field("original", &n.original)
            .field("heredocs", &n.heredocs)
            .field("start_line", &n.start_line)
            .field("end_line", &n.end_line)
            .field("prev_comment", &n.prev_comment)
            .finish()
    }
}

impl std::fmt::Debug for Node {
    /// Like a derived `Debug`, except that `next` prints as the flat list
    /// of the following argument nodes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("value", &self.value)
            .field("next", &Chain(self.next.as_deref()))
            .field("children", &self.children)
            .field("flags", &self.flags)
            .field("json", &self.json)
            .field("original", &self.original)
            .field("heredocs", &self.heredocs)
            .field("start_line", &self.start_line)
            .field("end_line", &self.end_line)
            .field("prev_comment", &self.prev_comment)
            .finish()
    }
}

/// A heredoc body attached to an instruction (`<<EOF ... EOF`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter word, quotes removed.
    pub name: String,
    /// The body, including its final newline.
    pub content: String,
    /// False when the delimiter was quoted (`<<"EOF"`), which turns expansion off.
    pub expand: bool,
    /// True for `<<-`: leading tabs are stripped from each body line.
    pub chomp: bool,
    /// The file descriptor prefix (`3<<EOF`), 0 when absent.
    pub file_descriptor: u32,
}

impl Node {
    /// A copy of this node without its `next` chain.
    fn clone_without_next(&self) -> Node {
        Node {
            value: self.value.clone(),
            next: None,
            children: self.children.clone(),
            flags: self.flags.clone(),
            json: self.json,
            original: self.original.clone(),
            heredocs: self.heredocs.clone(),
            start_line: self.start_line,
            end_line: self.end_line,
            prev_comment: self.prev_comment.clone(),
        }
    }

    /// The arguments as a vector of strings (the `next` chain).
    pub fn args(&self) -> Vec<&str> {
        let mut out = Vec::new();
        let mut cur = self.next.as_deref();
        while let Some(n) = cur {
            out.push(n.value.as_str());
            cur = n.next.as_deref();
        }
        out
    }

    /// The keyword in lower case (instruction nodes), with Go's
    /// `strings.ToLower` rules as BuildKit uses them (so `ENTRYPOİNT` is
    /// `entrypoint`, like the parser's own dispatch).
    pub fn keyword(&self) -> String {
        crate::dockerfile::parser::unicode::to_lower(&self.value)
    }
}

/// The result of parsing one Dockerfile.
#[derive(Debug, Clone, Default)]
pub struct ParseResult {
    /// The root node; its children are the instructions.
    pub ast: Node,
    /// The escape token in force (`\\` or `` ` ``).
    pub escape_token: char,
    /// The `# syntax=` directive, if any.
    pub syntax: Option<String>,
    /// The `# check=` directive, if any.
    pub check: Option<String>,
    /// Non-fatal findings, each with its line.
    pub warnings: Vec<Warning>,
}

/// A non-fatal parser finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// Short description.
    pub message: String,
    /// 1-based line.
    pub line: usize,
}
