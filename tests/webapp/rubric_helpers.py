"""Shared builders for the rubric and reward-spec tests: definitions and a project with real responses."""

from __future__ import annotations

from tests.conftest import token_for


def api_client(client, user):
    headers = {"Authorization": f"Bearer {token_for(user)}"}

    def call(method, url, data=None):
        kwargs = {"data": data, "content_type": "application/json"} if data is not None else {}
        return getattr(client, method)(url, headers=headers, **kwargs)

    return call


def rubric_definition(name="Helpful", **overrides):
    definition = {
        "name": name,
        "criteria": [
            {"name": "polite", "weight": 1, "rule": {"kind": "contains", "texts": ["please", "thank"]}},
            {"name": "short", "weight": 2, "rule": {"kind": "length", "max": 60}},
            {"name": "no_urls", "critical": True, "veto_cap": 0.1, "rule": {"kind": "format", "check": "no_urls"}},
        ],
    }
    definition.update(overrides)
    return definition


RESPONSES = [
    ("How do I reset my password?", "Thank you for asking! Click 'Forgot password'.", {"task": "chat"}),
    ("How do I reset my password?", "See www.example.com/reset for a long and detailed walkthrough of every step.",
     {"task": "chat"}),
    ("What is 2+2?", "The answer is \\boxed{4}", {"task": "math", "answer": "4"}),
    ("What is 2+2?", "It is 5, thanks", {"task": "math", "answer": "4"}),
]


def add_dataset(project, user, rows=RESPONSES, columns=("task", "answer")):
    """A ready dataset in ``project`` with one prompt + response per row (metadata on the prompt)."""
    from webapp.datasets.models import Dataset, Prompt, Response

    dataset = Dataset.objects.create(project=project, name="support", source_format="jsonl", status="ready",
                                     metadata_columns=list(columns), created_by=user, row_count=len(rows))
    responses = []
    for line, (prompt_text, text, metadata) in enumerate(rows, start=1):
        prompt = Prompt.objects.create(dataset=dataset, source_line=line, text=prompt_text, metadata=metadata)
        responses.append(Response.objects.create(prompt=prompt, text=text))
    return dataset, responses
