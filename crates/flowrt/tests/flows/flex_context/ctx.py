from promptflow.tracing._operation_context import OperationContext


def run():
    context = OperationContext.get_instance()
    assert "flow_id" in context and "root_run_id" in context
    return {"flow_id": context.flow_id, "root_run_id": context.root_run_id}
