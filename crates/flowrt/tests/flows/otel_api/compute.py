from opentelemetry import trace
from promptflow.core import tool
from promptflow.tracing import trace as pf_trace

# Made as library code makes them: with the OpenTelemetry API, no SDK.
tracer = trace.get_tracer("flow-code")


@pf_trace
def double(n):
    return n * 2


@tool
def compute(x: int) -> int:
    with tracer.start_as_current_span("outer", attributes={"step": "one"}):
        with tracer.start_as_current_span("inner") as span:
            span.set_attribute("x", x)
            y = double(x)
    try:
        with tracer.start_as_current_span("fails"):
            raise ValueError("on purpose")
    except ValueError:
        pass
    return y
