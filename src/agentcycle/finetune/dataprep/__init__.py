"""Dataset preparation: generate, collect, check and split fine-tuning data."""

from agentcycle.finetune.dataprep._io import write_jsonl
from agentcycle.finetune.dataprep.answers import (
    ANSWER_FORMS,
    check_answer_form,
    quote_then_answer,
    supporting_clauses,
    with_answer_form,
)
from agentcycle.finetune.dataprep.card import render_card, report_tables, write_card
from agentcycle.finetune.dataprep.generate import (
    GenerationReport,
    generate_offline,
    generate_with_teacher,
    parse_teacher_reply,
)
from agentcycle.finetune.dataprep.leakage import Leak, find_leaks, normalise
from agentcycle.finetune.dataprep.preference import check_pair, dpo_from_eval, dpo_from_feedback
from agentcycle.finetune.dataprep.split import sample_per_fact, sample_spread, split_records
from agentcycle.finetune.dataprep.toolcalls import called_tool
from agentcycle.finetune.dataprep.traces import (
    Collected,
    from_langfuse,
    from_mlflow,
    mlflow_calls,
    router_feedback,
    sft_from_eval,
)
from agentcycle.finetune.dataprep.validate import DatasetReport, validate_dataset

__all__ = [
    "ANSWER_FORMS", "Collected", "DatasetReport", "GenerationReport", "Leak",
    "called_tool", "check_answer_form", "check_pair", "dpo_from_eval", "dpo_from_feedback",
    "find_leaks", "from_langfuse", "from_mlflow", "generate_offline", "generate_with_teacher",
    "mlflow_calls", "normalise", "parse_teacher_reply", "quote_then_answer", "render_card",
    "report_tables", "router_feedback", "sample_per_fact", "sample_spread", "sft_from_eval",
    "split_records", "supporting_clauses", "validate_dataset", "with_answer_form",
    "write_card", "write_jsonl",
]
