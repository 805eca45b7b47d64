//! Running one line through the DAG, and aggregation over many lines.

use crate::value::value_at;
use crate::{
    ArgOrigin, Invocation, NodeArg, NodeRun, NodeStatus, NodeValue, RunObserver, ToolFailure,
    ToolInvoker, ToolOutcome, DEADLINE_EXCEEDED,
};
use flowrt_flow::pyvalue::py_eq;
use flowrt_flow::{Flow, InputValue, Node, RefSource, Reference};
use futures::stream::{FuturesUnordered, StreamExt};
use indexmap::IndexMap;
use serde::Serialize;
use serde_json::Value;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// How long after a line's deadline calls that were not stopped by their invoker are abandoned.
const DEADLINE_GRACE: Duration = Duration::from_millis(500);

/// Knobs for running lines.
#[derive(Clone, Debug, Default)]
pub struct ExecutorOptions {
    /// A line still running after this is stopped: its running nodes are marked canceled.
    pub line_timeout: Option<Duration>,
    /// Keep each node's inputs in its [`NodeRun::inputs`] (a traced line's spans show them).
    pub record_node_inputs: bool,
}

/// How one line ended.
#[derive(Clone, Debug, Serialize)]
pub struct LineResult {
    pub line_number: usize,
    pub inputs: IndexMap<String, Value>,
    pub outputs: IndexMap<String, Value>,
    /// `None` when the line completed.
    pub error: Option<ToolFailureAt>,
    pub node_runs: Vec<NodeRun>,
    /// A prompty or flex flow returned a value that is not a dict (a string, a number, a list):
    /// the outputs are `{"output": value}`, and promptflow shows the value itself (`pf flow test`
    /// prints it, `pf flow serve` answers it).
    #[serde(skip)]
    pub bare_output: bool,
    /// A flex entry returned a dataclass: Python's `repr()` of it, which `pf flow test` prints
    /// (the outputs are its fields).
    #[serde(skip)]
    pub result_repr: Option<String>,
    /// For each aggregation node, this line's values of its line-level inputs.
    #[serde(skip)]
    pub aggregation_inputs: IndexMap<String, IndexMap<String, Value>>,
    #[serde(serialize_with = "crate::seconds")]
    pub duration: Duration,
}

impl LineResult {
    pub fn succeeded(&self) -> bool {
        self.error.is_none()
    }
}

/// A line's failure: which node (if any) and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ToolFailureAt {
    pub node: Option<String>,
    #[serde(flatten)]
    pub failure: ToolFailure,
}

impl std::fmt::Display for ToolFailureAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.node {
            Some(n) => write!(
                f,
                "node '{n}' failed: {}: {}",
                self.failure.error_type, self.failure.message
            )?,
            None => write!(f, "{}: {}", self.failure.error_type, self.failure.message)?,
        }
        if let Some(tb) = &self.failure.traceback {
            if !tb.trim().is_empty() {
                write!(f, "\n{}", tb.trim_end())?;
            }
        }
        Ok(())
    }
}

/// The aggregation step's result.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AggregationResult {
    pub metrics: IndexMap<String, Value>,
    pub node_runs: Vec<NodeRun>,
    pub error: Option<ToolFailureAt>,
}

/// What the aggregation nodes read from a run's lines, kept column by column: per node, per
/// input, the values of the lines in the order they were added. A batch of many lines holds one
/// value per line and input here, not a map per line.
#[derive(Clone, Debug, Default)]
pub struct AggregationInputs {
    lines: usize,
    columns: IndexMap<String, IndexMap<String, Vec<Value>>>,
}

impl AggregationInputs {
    /// Add one line's `{node: {input: value}}` (a line missing a node or input gives null there).
    pub fn push(&mut self, line: IndexMap<String, IndexMap<String, Value>>) {
        for (node, inputs) in line {
            let columns = self.columns.entry(node).or_default();
            for (input, value) in inputs {
                let column = columns.entry(input).or_default();
                column.resize(self.lines, Value::Null);
                column.push(value);
            }
        }
        self.lines += 1;
    }

    /// [`AggregationInputs::push`] from the JSON object a line record holds; anything else is a
    /// line without values.
    pub fn push_json(&mut self, line: Value) {
        let mut parsed = IndexMap::new();
        if let Value::Object(nodes) = line {
            for (node, inputs) in nodes {
                if let Value::Object(inputs) = inputs {
                    parsed.insert(node, inputs.into_iter().collect());
                }
            }
        }
        self.push(parsed);
    }

    /// How many lines were added.
    pub fn len(&self) -> usize {
        self.lines
    }

    /// Whether no line was added.
    pub fn is_empty(&self) -> bool {
        self.lines == 0
    }

    /// The values of `input` of `node`, one per line, moved out.
    fn take(&mut self, node: &str, input: &str) -> Vec<Value> {
        let mut column = self
            .columns
            .get_mut(node)
            .and_then(|inputs| inputs.get_mut(input))
            .map(std::mem::take)
            .unwrap_or_default();
        column.resize(self.lines, Value::Null);
        column
    }
}

/// Runs lines of one flow through a [`ToolInvoker`].
pub struct Executor<I> {
    flow: Arc<Flow>,
    invoker: Arc<I>,
    observer: Arc<dyn RunObserver>,
    options: ExecutorOptions,
    /// Nodes read by at least one other node (a generator output of such a node is drained by its
    /// consumer, so a flow output reading it gets "").
    consumed: HashSet<String>,
}

enum State {
    Pending,
    Running,
    Done(NodeValue, Option<crate::Attachment>),
    Bypassed,
}

/// One line while it runs: its nodes (aggregation nodes run after all lines), what each came
/// to, the runs recorded so far, and the nodes started and not yet finished.
struct LineProgress<'f> {
    line_number: usize,
    nodes: Vec<&'f Node>,
    /// One per node of `nodes`.
    states: Vec<State>,
    runs: Vec<NodeRun>,
    /// By index in `nodes`, in the order they started.
    running_since: IndexMap<usize, Started>,
}

impl<'f> LineProgress<'f> {
    /// Line `line_number` of `flow`, nothing run yet.
    fn new(flow: &'f Flow, line_number: usize) -> Self {
        let nodes: Vec<&Node> = flow.nodes.iter().filter(|n| !n.aggregation).collect();
        let states = nodes.iter().map(|_| State::Pending).collect();
        LineProgress {
            line_number,
            nodes,
            states,
            runs: Vec::new(),
            running_since: IndexMap::new(),
        }
    }

    /// The state of the line's node `name` (`None` for an aggregation node or no node).
    fn state_of(&self, name: &str) -> Option<&State> {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .map(|j| &self.states[j])
    }

    /// Whether every node `node` depends on is done or bypassed, so it can start.
    fn dependencies_settled(&self, node: &Node) -> bool {
        node.dependencies()
            .all(|d| matches!(self.state_of(d), Some(State::Done(..) | State::Bypassed)))
    }
}

/// A node's arguments, by input name in the order the node declares them.
type Args = Vec<(String, NodeArg)>;

/// When a running node started, for its run's start and duration, and its inputs as its trace
/// shows them (when the executor keeps them).
struct Started {
    clock: Instant,
    start: SystemTime,
    inputs: Option<String>,
}

impl Started {
    /// A node starting now.
    fn now(inputs: Option<String>) -> Self {
        Started {
            clock: Instant::now(),
            start: SystemTime::now(),
            inputs,
        }
    }
}

/// The run of `node`, which completed with `outcome`, and its state for the nodes that read it.
fn completed_run(node: &Node, started: Started, outcome: ToolOutcome) -> (NodeRun, State) {
    let ToolOutcome {
        output,
        logs,
        attachment,
        metrics: _,
        usage,
        llm_request,
        spans,
        repr,
        function,
    } = outcome;
    let run = NodeRun {
        node: node.name.clone(),
        status: NodeStatus::Completed,
        start: started.start,
        duration: started.clock.elapsed(),
        output: Some(match &output {
            NodeValue::Value(v) => v.clone(),
            NodeValue::Generator { joined, .. } => Value::String(joined.clone()),
        }),
        error: None,
        logs,
        usage,
        llm_request,
        spans,
        repr,
        inputs: started.inputs,
        function,
    };
    (run, State::Done(output, attachment))
}

/// The run of a node that gave nothing (bypassed, failed, canceled): its status and timing, and
/// its inputs when they are kept.
fn empty_run(
    node: &str,
    status: NodeStatus,
    start: SystemTime,
    duration: Duration,
    inputs: Option<String>,
) -> NodeRun {
    NodeRun {
        node: node.to_string(),
        status,
        start,
        duration,
        output: None,
        error: None,
        logs: String::new(),
        usage: None,
        llm_request: None,
        spans: Vec::new(),
        repr: None,
        inputs,
        function: None,
    }
}

impl<I: ToolInvoker> Executor<I> {
    pub fn new(
        flow: Arc<Flow>,
        invoker: Arc<I>,
        observer: Arc<dyn RunObserver>,
        options: ExecutorOptions,
    ) -> Self {
        // A value-returning flow's aggregation (a flex class's `__aggregate__`) reads the line's
        // value after the line: it does not drain a generator the output reads.
        let consumed = flow
            .nodes
            .iter()
            .filter(|n| !(flow.kind.returns_value() && n.aggregation))
            .flat_map(|n| n.dependencies().map(str::to_string))
            .collect();
        Executor {
            flow,
            invoker,
            observer,
            options,
            consumed,
        }
    }

    pub fn flow(&self) -> &Arc<Flow> {
        &self.flow
    }

    pub fn invoker(&self) -> &Arc<I> {
        &self.invoker
    }

    pub fn has_aggregation(&self) -> bool {
        self.flow.nodes.iter().any(|n| n.aggregation)
    }

    fn line_timeout_error(&self, line_number: usize) -> ToolFailureAt {
        let secs = self
            .options
            .line_timeout
            .map(|t| t.as_secs_f64())
            .unwrap_or(0.0);
        ToolFailureAt {
            node: None,
            failure: ToolFailure::new(
                "LineExecutionTimeoutError",
                format!("line {line_number} did not finish within {secs} seconds"),
            ),
        }
    }

    /// Run one line with already converted inputs (see [`crate::prepare_inputs`]).
    pub async fn run_line(
        &self,
        line_number: usize,
        inputs: IndexMap<String, Value>,
    ) -> LineResult {
        let started = Instant::now();
        let deadline = self
            .options
            .line_timeout
            .map(|t| tokio::time::Instant::now() + t);
        let call_deadline = deadline.map(|d| d.into_std());
        let mut line = LineProgress::new(&self.flow, line_number);
        let mut running = FuturesUnordered::new();
        let error = loop {
            let ready = match self.start_ready_nodes(&inputs, &mut line) {
                Ok(ready) => ready,
                Err(failure) => break Some(failure),
            };
            for (i, args) in ready {
                running.push(self.call_node(i, line.nodes[i], args, line_number, call_deadline));
            }
            if running.is_empty() {
                break None;
            }
            // Invokers stop their calls at the deadline (see `Invocation::deadline`); calls
            // still running shortly after it are abandoned.
            let next = match deadline {
                Some(d) => {
                    match tokio::time::timeout_at(d + DEADLINE_GRACE, running.next()).await {
                        Ok(n) => n,
                        Err(_) => break Some(self.line_timeout_error(line_number)),
                    }
                }
                None => running.next().await,
            };
            let Some((i, result)) = next else {
                break None;
            };
            if let Err(failure) = self.finish_node(&mut line, i, result) {
                break Some(failure);
            }
        };
        drop(running);
        self.cancel_unfinished(&mut line);
        self.line_result(line, inputs, error, started)
    }

    /// One pass over the line's pending nodes, in the flow's order: each node whose dependencies
    /// are settled is bypassed, or marked running (and told to the observer). Nodes are in
    /// topological order, so one pass also settles chains of bypassed nodes. Returns the nodes to
    /// call with their arguments, or the failure that stops the line.
    fn start_ready_nodes(
        &self,
        inputs: &IndexMap<String, Value>,
        line: &mut LineProgress<'_>,
    ) -> Result<Vec<(usize, Args)>, ToolFailureAt> {
        let mut ready = Vec::new();
        for i in 0..line.nodes.len() {
            let node = line.nodes[i];
            if !matches!(line.states[i], State::Pending) || !line.dependencies_settled(node) {
                continue;
            }
            let at_node = |failure: ToolFailure| ToolFailureAt {
                node: Some(node.name.clone()),
                failure,
            };
            let lookup = |name: &str| line.state_of(name);
            if !self.should_run(node, inputs, &lookup).map_err(at_node)? {
                line.states[i] = State::Bypassed;
                line.runs.push(empty_run(
                    &node.name,
                    NodeStatus::Bypassed,
                    SystemTime::now(),
                    Duration::ZERO,
                    None,
                ));
                continue;
            }
            let args = self.resolve_args(node, inputs, &lookup).map_err(at_node)?;
            line.states[i] = State::Running;
            self.observer
                .node_started(Some(line.line_number), &node.name);
            let recorded_inputs = self.options.record_node_inputs.then(|| node_inputs(&args));
            line.running_since.insert(i, Started::now(recorded_inputs));
            ready.push((i, args));
        }
        Ok(ready)
    }

    /// Call node `i`'s tool; the call yields `i` with its outcome, so the line knows which of its
    /// running nodes finished.
    async fn call_node(
        &self,
        i: usize,
        node: &Node,
        args: Args,
        line_number: usize,
        deadline: Option<std::time::Instant>,
    ) -> (usize, Result<ToolOutcome, ToolFailure>) {
        let result = self
            .invoker
            .invoke(Invocation {
                node,
                args,
                line: Some(line_number),
                deadline,
            })
            .await;
        (i, result)
    }

    /// Record how running node `i` ended: its run (told to the observer) and, when it completed,
    /// its output for the nodes that read it. `Err` stops the line: the node failed, or its call
    /// was stopped at the line's deadline (the node stays running, to be canceled).
    fn finish_node(
        &self,
        line: &mut LineProgress<'_>,
        i: usize,
        result: Result<ToolOutcome, ToolFailure>,
    ) -> Result<(), ToolFailureAt> {
        let started = line
            .running_since
            .swap_remove(&i)
            .unwrap_or_else(|| Started::now(None));
        let node = line.nodes[i];
        match result {
            Ok(outcome) => {
                let (run, state) = completed_run(node, started, outcome);
                self.observer.node_finished(Some(line.line_number), &run);
                line.runs.push(run);
                line.states[i] = state;
                Ok(())
            }
            Err(failure) if failure.error_type == DEADLINE_EXCEEDED => {
                // Stopped at the line's deadline: the line timed out; the node was canceled.
                line.running_since.insert(i, started);
                Err(self.line_timeout_error(line.line_number))
            }
            Err(failure) => {
                let run = NodeRun {
                    error: Some(failure.clone()),
                    ..empty_run(
                        &node.name,
                        NodeStatus::Failed,
                        started.start,
                        started.clock.elapsed(),
                        started.inputs,
                    )
                };
                self.observer.node_finished(Some(line.line_number), &run);
                line.runs.push(run);
                Err(ToolFailureAt {
                    node: Some(node.name.clone()),
                    failure,
                })
            }
        }
    }

    /// Record the nodes still running as canceled: a failure elsewhere or the line's timeout
    /// stopped them.
    fn cancel_unfinished(&self, line: &mut LineProgress<'_>) {
        for (i, started) in std::mem::take(&mut line.running_since) {
            let run = empty_run(
                &line.nodes[i].name,
                NodeStatus::Canceled,
                started.start,
                started.clock.elapsed(),
                started.inputs,
            );
            self.observer.node_finished(Some(line.line_number), &run);
            line.runs.push(run);
        }
    }

    /// The line's result once its nodes are settled: unless it already failed, its outputs and
    /// what its aggregation nodes will read of it.
    fn line_result(
        &self,
        line: LineProgress<'_>,
        inputs: IndexMap<String, Value>,
        mut error: Option<ToolFailureAt>,
        started: Instant,
    ) -> LineResult {
        let lookup = |name: &str| line.state_of(name);
        let mut outputs = IndexMap::new();
        let mut bare_output = false;
        let mut aggregation_inputs = IndexMap::new();
        if error.is_none() {
            match self.collect_outputs(&inputs, &lookup) {
                Ok((o, bare)) => (outputs, bare_output) = (o, bare),
                Err(failure) => {
                    error = Some(ToolFailureAt {
                        node: None,
                        failure,
                    })
                }
            }
        }
        if error.is_none() {
            (aggregation_inputs, error) = self.aggregation_inputs_of(&inputs, &lookup);
        }
        let runs = line.runs;
        let result_repr = match self.flow.kind {
            flowrt_flow::FlowKind::Flex if error.is_none() => {
                runs.iter().find_map(|r| r.repr.clone())
            }
            _ => None,
        };
        LineResult {
            line_number: line.line_number,
            inputs,
            outputs,
            error,
            node_runs: runs,
            bare_output,
            result_repr,
            aggregation_inputs,
            duration: started.elapsed(),
        }
    }

    /// For each aggregation node, this line's values of its line-level inputs, and the failure of
    /// the last input that could not be resolved (each node keeps the values read before its
    /// failing input, and the nodes after it are still read).
    fn aggregation_inputs_of<'s>(
        &self,
        inputs: &IndexMap<String, Value>,
        lookup: &impl Fn(&str) -> Option<&'s State>,
    ) -> (
        IndexMap<String, IndexMap<String, Value>>,
        Option<ToolFailureAt>,
    ) {
        let mut aggregation_inputs = IndexMap::new();
        let mut error = None;
        for node in self.flow.nodes.iter().filter(|n| n.aggregation) {
            let (values, failure) = self.aggregation_node_inputs(node, inputs, lookup);
            if failure.is_some() {
                error = failure;
            }
            aggregation_inputs.insert(node.name.clone(), values);
        }
        (aggregation_inputs, error)
    }

    /// This line's values of aggregation node `node`'s inputs that read the line (not literals,
    /// not other aggregation nodes), up to the first that cannot be resolved, with its failure.
    fn aggregation_node_inputs<'s>(
        &self,
        node: &Node,
        inputs: &IndexMap<String, Value>,
        lookup: &impl Fn(&str) -> Option<&'s State>,
    ) -> (IndexMap<String, Value>, Option<ToolFailureAt>) {
        let mut values = IndexMap::new();
        for (name, input) in &node.inputs {
            let InputValue::Reference(r) = input else {
                continue;
            };
            if r.node()
                .is_some_and(|n| self.flow.node(n).is_some_and(|n| n.aggregation))
            {
                continue;
            }
            // A value-returning flow aggregates its lines' values: a generator's is its joined
            // text, as in the line's outputs.
            let joined = match r.node().and_then(lookup) {
                Some(State::Done(NodeValue::Generator { joined, .. }, _))
                    if self.flow.kind.returns_value() && r.path.is_empty() =>
                {
                    Some(Value::String(joined.clone()))
                }
                _ => None,
            };
            if let Some(v) = joined {
                values.insert(name.clone(), v);
                continue;
            }
            match resolve(&self.flow, r, inputs, lookup) {
                Ok(Resolved::Value(v, ..)) => values.insert(name.clone(), v),
                Ok(Resolved::Bypassed) => values.insert(name.clone(), Value::Null),
                Err(message) => {
                    let failure = ToolFailureAt {
                        node: Some(node.name.clone()),
                        failure: ToolFailure::new(
                            "InvalidReference",
                            format!("input '{name}': {message}"),
                        ),
                    };
                    return (values, Some(failure));
                }
            };
        }
        (values, None)
    }

    /// `activate` and bypass rules: run the node or not.
    fn should_run<'s>(
        &self,
        node: &Node,
        inputs: &IndexMap<String, Value>,
        lookup: &impl Fn(&str) -> Option<&'s State>,
    ) -> Result<bool, ToolFailure> {
        if let Some(activate) = &node.activate {
            return match resolve(&self.flow, &activate.when, inputs, lookup) {
                Ok(Resolved::Bypassed) => Ok(false),
                Ok(Resolved::Value(v, ..)) => Ok(py_eq(&v, &activate.is)),
                Err(message) => Err(ToolFailure::new(
                    "InvalidReference",
                    format!("activate.when: {message}"),
                )),
            };
        }
        let mut deps = node.input_dependencies().peekable();
        if deps.peek().is_none() {
            return Ok(true);
        }
        Ok(!deps.all(|d| matches!(lookup(d), Some(State::Bypassed))))
    }

    fn resolve_args<'s>(
        &self,
        node: &Node,
        inputs: &IndexMap<String, Value>,
        lookup: &impl Fn(&str) -> Option<&'s State>,
    ) -> Result<Vec<(String, NodeArg)>, ToolFailure> {
        let mut args = Vec::with_capacity(node.inputs.len());
        for (name, input) in &node.inputs {
            let arg = match input {
                InputValue::Literal(v) => NodeArg::Literal(v.clone()),
                InputValue::Reference(r) => match resolve(&self.flow, r, inputs, lookup) {
                    Ok(Resolved::Value(value, origin, attachment)) => NodeArg::Value {
                        value,
                        origin,
                        attachment,
                    },
                    Ok(Resolved::Bypassed) => NodeArg::Bypassed,
                    Err(message) => {
                        return Err(ToolFailure::new(
                            "InvalidReference",
                            format!("input '{name}': {message}"),
                        ));
                    }
                },
            };
            args.push((name.clone(), arg));
        }
        Ok(args)
    }

    /// The line's outputs, and whether they wrap a value-returning flow's non-dict value.
    fn collect_outputs<'s>(
        &self,
        inputs: &IndexMap<String, Value>,
        lookup: &impl Fn(&str) -> Option<&'s State>,
    ) -> Result<(IndexMap<String, Value>, bool), ToolFailure> {
        let mut outputs = IndexMap::with_capacity(self.flow.outputs.len());
        for (name, out) in &self.flow.outputs {
            let r = &out.reference;
            let value = match &r.source {
                RefSource::Literal(v) => v.clone(),
                RefSource::FlowInput(i) => {
                    let root = inputs.get(i).unwrap_or(&Value::Null);
                    value_at(root, &r.path).cloned().map_err(|e| {
                        ToolFailure::new("InvalidReference", format!("output '{name}' ({r}): {e}"))
                    })?
                }
                RefSource::Node(n) => {
                    if self.flow.node(n).is_some_and(|node| node.aggregation) {
                        continue; // promptflow drops outputs that read aggregation nodes
                    }
                    match lookup(n) {
                        Some(State::Done(NodeValue::Generator { joined, .. }, _)) => {
                            if self.consumed.contains(n) {
                                Value::String(String::new())
                            } else {
                                Value::String(joined.clone())
                            }
                        }
                        Some(State::Done(NodeValue::Value(v), _)) => {
                            let path = if r.bracket_after_output {
                                &[][..]
                            } else {
                                &r.path[..]
                            };
                            value_at(v, path).cloned().map_err(|e| {
                                ToolFailure::new(
                                    "InvalidReference",
                                    format!("output '{name}' ({r}): {e}"),
                                )
                            })?
                        }
                        _ => Value::Null,
                    }
                }
            };
            outputs.insert(name.clone(), value);
        }
        if self.flow.kind.returns_value() && outputs.len() == 1 {
            match outputs.get(flowrt_flow::VALUE_OUTPUT) {
                Some(Value::Object(fields)) => {
                    return Ok((fields.clone().into_iter().collect(), false))
                }
                Some(_) => return Ok((outputs, true)),
                None => {}
            }
        }
        Ok((outputs, false))
    }

    /// Run the aggregation nodes once over the completed lines (in line order).
    pub async fn run_aggregation(&self, lines: &[&LineResult]) -> AggregationResult {
        let mut inputs = AggregationInputs::default();
        for line in lines {
            inputs.push(line.aggregation_inputs.clone());
        }
        self.run_aggregation_of(inputs).await
    }

    /// [`Executor::run_aggregation`] over inputs gathered column by column (each column is moved
    /// into the list its node receives).
    pub async fn run_aggregation_of(&self, mut lines: AggregationInputs) -> AggregationResult {
        let mut result = AggregationResult::default();
        let mut done: IndexMap<String, Value> = IndexMap::new();
        for node in self.flow.nodes.iter().filter(|n| n.aggregation) {
            let mut args = Vec::with_capacity(node.inputs.len());
            for (name, input) in &node.inputs {
                let arg = match input {
                    InputValue::Literal(v) => NodeArg::Literal(v.clone()),
                    InputValue::Reference(r) => match r.node().filter(|n| done.contains_key(*n)) {
                        Some(n) => {
                            let root = done.get(n).unwrap_or(&Value::Null);
                            let path = if r.bracket_after_output {
                                &[][..]
                            } else {
                                &r.path[..]
                            };
                            NodeArg::Value {
                                value: value_at(root, path).cloned().unwrap_or(Value::Null),
                                origin: ArgOrigin::Node(
                                    self.flow
                                        .node(n)
                                        .map_or(node.kind, |producer| producer.kind),
                                ),
                                attachment: None,
                            }
                        }
                        None => NodeArg::Value {
                            value: Value::Array(lines.take(&node.name, name)),
                            origin: ArgOrigin::FlowInput,
                            attachment: None,
                        },
                    },
                };
                args.push((name.clone(), arg));
            }
            let inputs = self.options.record_node_inputs.then(|| node_inputs(&args));
            self.observer.node_started(None, &node.name);
            let (t0, start) = (Instant::now(), SystemTime::now());
            let outcome = self
                .invoker
                .invoke(Invocation {
                    node,
                    args,
                    line: None,
                    deadline: None,
                })
                .await;
            let mut run = NodeRun {
                node: node.name.clone(),
                status: NodeStatus::Completed,
                start,
                duration: t0.elapsed(),
                output: None,
                error: None,
                logs: String::new(),
                usage: None,
                llm_request: None,
                spans: Vec::new(),
                repr: None,
                inputs,
                function: None,
            };
            match outcome {
                Ok(o) => {
                    for (k, v) in o.metrics {
                        result.metrics.insert(k, v);
                    }
                    let value = o.output.as_input();
                    run.output = Some(value.clone());
                    run.logs = o.logs;
                    run.usage = o.usage;
                    run.llm_request = o.llm_request;
                    run.spans = o.spans;
                    run.function = o.function;
                    done.insert(node.name.clone(), value);
                    self.observer.node_finished(None, &run);
                    result.node_runs.push(run);
                }
                Err(failure) => {
                    run.status = NodeStatus::Failed;
                    run.error = Some(failure.clone());
                    self.observer.node_finished(None, &run);
                    result.node_runs.push(run);
                    result.error = Some(ToolFailureAt {
                        node: Some(node.name.clone()),
                        failure,
                    });
                    break;
                }
            }
        }
        result
    }
}

enum Resolved {
    /// The value, where it came from, and the producer's attachment when the whole output is read.
    Value(Value, ArgOrigin, Option<crate::Attachment>),
    Bypassed,
}

/// A node's inputs as its trace shows them: each argument's value (a bypassed one as null), as
/// JSON text written from the arguments themselves.
fn node_inputs(args: &[(String, NodeArg)]) -> String {
    static NULL: Value = Value::Null;
    flowrt_flow::nonfinite::object_to_json_line(args.iter().map(|(name, arg)| {
        let value = match arg {
            NodeArg::Value { value, .. } | NodeArg::Literal(value) => value,
            NodeArg::Bypassed => &NULL,
        };
        (name.as_str(), value)
    }))
}

fn resolve<'s>(
    flow: &Flow,
    r: &Reference,
    inputs: &IndexMap<String, Value>,
    lookup: &impl Fn(&str) -> Option<&'s State>,
) -> Result<Resolved, String> {
    match &r.source {
        RefSource::Literal(v) => Ok(Resolved::Value(v.clone(), ArgOrigin::FlowInput, None)),
        RefSource::FlowInput(i) => {
            let root = inputs
                .get(i)
                .ok_or_else(|| format!("flow input '{i}' has no value"))?;
            value_at(root, &r.path)
                .map(|v| Resolved::Value(v.clone(), ArgOrigin::FlowInput, None))
                .map_err(|e| format!("{r}: {e}"))
        }
        RefSource::Node(n) => match lookup(n) {
            Some(State::Bypassed) => Ok(Resolved::Bypassed),
            Some(State::Done(out, attachment)) => {
                let kind = ArgOrigin::Node(
                    flow.node(n)
                        .map_or(flowrt_flow::NodeKind::Python, |x| x.kind),
                );
                match out {
                    NodeValue::Value(v) => value_at(v, &r.path)
                        .map(|v| {
                            let whole = r.path.is_empty();
                            Resolved::Value(v.clone(), kind, attachment.clone().filter(|_| whole))
                        })
                        .map_err(|e| format!("{r}: {e}")),
                    NodeValue::Generator { .. } => Ok(Resolved::Value(out.as_input(), kind, None)),
                }
            }
            _ => Err(format!("{r}: node '{n}' has not run")),
        },
    }
}

#[cfg(test)]
mod aggregation_inputs_tests {
    use super::AggregationInputs;
    use serde_json::json;

    #[test]
    fn columns_stay_aligned_with_lines_when_a_line_lacks_a_value() {
        let mut inputs = AggregationInputs::default();
        inputs.push_json(json!({"agg": {"a": 1}}));
        inputs.push_json(json!({"agg": {"a": 2, "b": "x"}}));
        inputs.push_json(json!({}));
        inputs.push_json(json!({"agg": {"b": "y"}}));
        assert_eq!(inputs.len(), 4);
        assert_eq!(
            inputs.take("agg", "a"),
            vec![json!(1), json!(2), json!(null), json!(null)]
        );
        assert_eq!(
            inputs.take("agg", "b"),
            vec![json!(null), json!("x"), json!(null), json!("y")]
        );
        assert_eq!(inputs.take("other", "c"), vec![json!(null); 4]);
    }
}
