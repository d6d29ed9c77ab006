"""Importing datasets through the REST API: every format, every shape, every kind of bad input."""

import io
import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.conftest import token_for
from webapp.annotation.models import Comparison, PreferenceLabel
from webapp.datasets.models import Dataset, Prompt, Response


def _upload(client, user, project_id, filename, content: bytes, **fields):
    data = {"file": SimpleUploadedFile(filename, content), **{k: str(v) for k, v in fields.items()}}
    return client.post(f"/api/v1/projects/{project_id}/datasets", data,
                       headers={"Authorization": f"Bearer {token_for(user)}"})


def _jsonl(rows) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def _parquet(rows) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    return buf.getvalue()


@pytest.mark.django_db
def test_it_imports_prompts_with_n_responses_from_jsonl_keeping_metadata(client, people):
    rows = [{"prompt": "What is 2+2?", "responses": ["4", {"text": "5", "model": "tiny-lm"}, "four"], "topic": "math"},
            {"prompt": "Say hi", "response_1": "hi", "response_2": "hello", "topic": "chat", "difficulty": 1}]
    r = _upload(client, people.users["bob"], people.project.pk, "data.jsonl", _jsonl(rows), name="Math")
    assert r.status_code == 201, r.content
    body = r.json()
    assert body["status"] == "ready" and body["row_count"] == 2 and body["response_count"] == 5
    assert set(body["metadata_columns"]) == {"topic", "difficulty"}
    prompt = Prompt.objects.get(dataset_id=body["id"], source_line=1)
    assert prompt.metadata == {"topic": "math"}
    assert [r.text for r in prompt.responses.order_by("id")] == ["4", "5", "four"]
    assert prompt.responses.get(text="5").model_name == "tiny-lm"
    assert Response.objects.filter(prompt__dataset__project=people.project).count() == 5


@pytest.mark.django_db
def test_it_imports_trl_preference_rows_plain_and_conversational(client, people):
    rows = [{"prompt": "Capital of France?", "chosen": "Paris", "rejected": "Lyon"},
            {"chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
             "rejected": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Go away"}]}]
    r = _upload(client, people.users["alice"], people.project.pk, "prefs.jsonl", _jsonl(rows))
    assert r.status_code == 201, r.content
    chat = Prompt.objects.get(dataset_id=r.json()["id"], source_line=2)
    assert chat.messages == [{"role": "user", "content": "Hi"}]
    assert [(x.text, x.metadata["preference"]) for x in chat.responses.order_by("id")] == [
        ("Hello!", "chosen"), ("Go away", "rejected")]


@pytest.mark.django_db
def test_it_imports_a_plain_trl_preference_as_a_label_when_asked(client, people):
    rows = [{"prompt": "Capital of France?", "chosen": "Paris", "rejected": "Lyon"},
            {"prompt": "2+2?", "chosen": "4", "rejected": "5", "margin": 3.5}]
    r = _upload(client, people.users["alice"], people.project.pk, "hh.jsonl", _jsonl(rows), name="hh",
                preference_labels="human")
    assert r.status_code == 201, r.content
    assert r.json()["label_count"] == 2 and r.json()["preference_labels"] == "human"
    labels = PreferenceLabel.objects.filter(comparison__prompt__dataset_id=r.json()["id"]).select_related("comparison")
    for label in labels:
        chosen = Response.objects.get(pk=label.comparison.response_ids[0 if label.choice == "a" else 1])
        assert chosen.metadata["preference"] == "chosen" and label.source == "human" and label.annotator is None
        assert label.provenance["imported"]["annotator"] == "dataset:hh"
        assert label.comparison.human_label_count == label.comparison.taken == label.comparison.overlap == 1
    exported = [json.loads(x) for x in b"".join(client.get(
        f"/api/v1/projects/{people.project.pk}/export", headers={"Authorization": f"Bearer {token_for(people.users['alice'])}"}
    ).streaming_content).decode().splitlines()]
    assert sorted((x["chosen"], x["rejected"]) for x in exported) == [("4", "5"), ("Paris", "Lyon")]

    # as LM labels the comparisons stay open to people: an audit of the file's labels against humans
    r = _upload(client, people.users["alice"], people.project.pk, "ai.jsonl", _jsonl(rows[:1]), preference_labels="lm")
    label = PreferenceLabel.objects.get(comparison__prompt__dataset_id=r.json()["id"])
    assert label.source == "lm" and label.model_version == "dataset:ai.jsonl" and label.comparison.taken == 0

    bad = _upload(client, people.users["alice"], people.project.pk, "x.jsonl", _jsonl(rows), preference_labels="yes")
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "preference_labels"


@pytest.mark.django_db
def test_it_imports_chat_transcripts_last_assistant_turn_as_response(client, people):
    rows = [{"messages": [{"role": "system", "content": "Be brief"}, {"role": "user", "content": "2+2?"},
                          {"role": "assistant", "content": "4"}], "id": "t1"}]
    r = _upload(client, people.users["alice"], people.project.pk, "chats.jsonl", _jsonl(rows))
    prompt = Prompt.objects.get(dataset_id=r.json()["id"])
    assert [m["role"] for m in prompt.messages] == ["system", "user"]
    assert prompt.responses.get().text == "4" and prompt.metadata == {"id": "t1"}


@pytest.mark.django_db
def test_it_imports_csv_with_json_cells_and_reports_csv_line_numbers(client, people):
    content = ('prompt,response_a,response_b,source\n'
               '"Multi\nline prompt",yes,no,web\n'
               'Second,"[{""role"": ""assistant"", ""content"": ""chat""}]",plain,web\n'
               'Third,,missing,web\n').encode()
    r = _upload(client, people.users["alice"], people.project.pk, "rows.csv", content, mode="skip")
    assert r.status_code == 201, r.content
    body = r.json()
    assert body["row_count"] == 2 and body["skipped_count"] == 1
    assert body["row_errors"] == [{"line": 5, "message": "'response_a' is empty"}]
    second = Prompt.objects.get(dataset_id=body["id"], source_line=4)
    assert second.responses.order_by("id").first().messages == [{"role": "assistant", "content": "chat"}]


@pytest.mark.django_db
def test_it_imports_parquet_with_row_numbers(client, people):
    rows = [{"prompt": f"p{i}", "chosen": f"good {i}", "rejected": f"bad {i}", "score": i / 10} for i in range(5)]
    r = _upload(client, people.users["alice"], people.project.pk, "prefs.parquet", _parquet(rows))
    assert r.status_code == 201, r.content
    assert r.json()["row_count"] == 5
    assert Prompt.objects.get(dataset_id=r.json()["id"], source_line=3).metadata == {"score": 0.2}


@pytest.mark.django_db
def test_it_imports_a_zipped_hugging_face_save_to_disk_folder(client, people, tmp_path):
    import datasets

    ds = datasets.Dataset.from_list([{"prompt": "Q1", "responses": ["a", "b"], "lang": "en"},
                                     {"prompt": "Q2", "responses": ["c", "d"], "lang": "fr"}])
    ds.save_to_disk(str(tmp_path / "hf"))
    archive = shutil.make_archive(str(tmp_path / "hf"), "zip", tmp_path / "hf")
    r = _upload(client, people.users["alice"], people.project.pk, "hf.zip", open(archive, "rb").read())
    assert r.status_code == 201, r.content
    body = r.json()
    assert body["source_format"] == "hf" and body["row_count"] == 2 and body["metadata_columns"] == ["lang"]


BAD_ROWS = [
    (b'{"prompt": "ok", "responses": ["a"]}\n{"prompt": "broken", \n', 2, "not valid JSON"),
    (b'{"prompt": "ok", "responses": ["a"]}\n{"text": "no prompt"}\n', 2, "no 'prompt', 'messages' or 'chosen'/'rejected' column"),
    (b'{"prompt": "ok", "responses": ["a"]}\n{"prompt": 42}\n', 2, "'prompt' must be text or a list of chat messages, got int"),
    (b'{"prompt": "ok", "responses": ["a"]}\n{"prompt": "x", "responses": ["fine", "  "]}\n', 2, "response 2 is empty"),
    (b'{"prompt": "ok", "responses": ["a"]}\n[1, 2]\n', 2, "expected a JSON object, got a list"),
    (b'{"prompt": "ok", "chosen": "a"}\n', 1, "has 'chosen' but no 'rejected' column"),
    (b'{"prompt": "ok", "responses": ["a"]}\n{"prompt": "\xff\xfe"}\n', 2, "not UTF-8 text"),
]


@pytest.mark.django_db
@pytest.mark.parametrize("content,line,reason", BAD_ROWS)
def test_it_imports_nothing_in_strict_mode_and_names_the_bad_line(client, people, content, line, reason):
    r = _upload(client, people.users["alice"], people.project.pk, "bad.jsonl", content)
    assert r.status_code == 422
    messages = [d["message"] for d in r.json()["detail"]]
    assert any(m.startswith(f"line {line}: {reason}") for m in messages), messages
    dataset = Dataset.objects.get(project=people.project)
    assert dataset.status == "failed" and dataset.row_count == 0
    assert not Prompt.objects.filter(dataset=dataset).exists() and not Response.objects.exists()


@pytest.mark.django_db
def test_it_skips_bad_rows_when_asked_and_reports_each(client, people):
    content = (b'{"prompt": "one", "responses": ["a", "b"]}\n{oops}\n'
               b'{"prompt": "", "responses": ["a"]}\n{"prompt": "four", "responses": ["c"]}\n')
    r = _upload(client, people.users["alice"], people.project.pk, "mixed.jsonl", content, mode="skip")
    assert r.status_code == 201
    body = r.json()
    assert body["row_count"] == 2 and body["skipped_count"] == 2
    assert [e["line"] for e in body["row_errors"]] == [2, 3]
    assert body["row_errors"][1]["message"] == "'prompt' is empty"


@pytest.mark.django_db
@pytest.mark.parametrize("name,content,message", [
    ("data.csv", _parquet([{"prompt": "x"}]), "is a Parquet file, not CSV text"),
    ("data.parquet", b'{"prompt": "x"}\n', "is not a Parquet file"),
    ("data.jsonl", b"\x89PNG\r\n\x1a\n0000", "is a PNG image"),
    ("data.jsonl", b"", "the file is empty"),
    ("data.csv", b"prompt,prompt\nx,y\n", "line 1 repeats column(s) prompt"),
])
def test_it_rejects_a_file_in_the_wrong_format_with_a_message(client, people, name, content, message):
    r = _upload(client, people.users["alice"], people.project.pk, name, content)
    assert r.status_code == 422
    assert any(message in d["message"] and d["field"] == "file" for d in r.json()["detail"]), r.json()
    assert not Prompt.objects.exists()


@pytest.mark.django_db
def test_it_rejects_a_file_over_the_size_limit_before_reading_it(client, people, settings):
    settings.DATASET_MAX_UPLOAD_BYTES = 1000
    r = _upload(client, people.users["alice"], people.project.pk, "huge.jsonl", _jsonl([{"prompt": "x" * 2000}]))
    assert r.status_code == 422
    assert "the limit is" in r.json()["detail"][0]["message"]
    assert not Dataset.objects.exists()


@pytest.mark.django_db
def test_it_refuses_a_2_gb_file_on_disk_without_loading_it(people, tmp_path):
    from django.core.exceptions import ValidationError

    from webapp.datasets.services import dataset_create

    big = tmp_path / "big.jsonl"
    with open(big, "wb") as f:
        f.truncate(2 * 1024**3)  # sparse: 2 GB on paper, nothing on disk
    with pytest.raises(ValidationError) as exc:
        dataset_create(project=people.project, user=people.users["alice"], name="big", path=big)
    assert "2,048 MB; the limit is 1,024 MB" in exc.value.message_dict["file"][0]
    assert not Dataset.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("role,status", [("annotator", 403), ("viewer", 403), ("outsider", 404)])
def test_it_lets_only_designers_import(client, people, role, status):
    r = _upload(client, people.by_role[role], people.project.pk, "d.jsonl", _jsonl([{"prompt": "x"}]))
    assert r.status_code == status
    assert not Dataset.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_it_imports_a_large_file_in_the_background_with_progress(client, people, celery_workers, settings):
    from tests.conftest import wait_for

    rows = [{"prompt": f"prompt {i}", "responses": [f"a{i}", f"b{i}"]} for i in range(3000)]
    settings.DATASET_INLINE_IMPORT_BYTES = 1000
    r = _upload(client, people.users["alice"], people.project.pk, "big.jsonl", _jsonl(rows))
    assert r.status_code == 202 and r.json()["status"] == "importing"
    dataset_id = r.json()["id"]
    seen = []

    def finished():
        d = Dataset.objects.get(pk=dataset_id)
        seen.append(d.progress_percent)
        return d.status != "importing" and d

    dataset = wait_for(finished, 60, 0.05, "the import to finish")
    assert dataset.status == "ready", dataset.error
    assert dataset.row_count == 3000 and Response.objects.filter(prompt__dataset=dataset).count() == 6000
    assert seen[-1] == 100


@pytest.mark.django_db
def test_it_shows_no_rows_of_a_failed_import_and_keeps_the_database_clean(client, people):
    good = [{"prompt": f"p{i}", "responses": ["a", "b"]} for i in range(2500)]
    content = _jsonl(good) + b"{bad json}\n"
    r = _upload(client, people.users["alice"], people.project.pk, "late-error.jsonl", content)
    assert r.status_code == 422
    assert "line 2501: not valid JSON" in " ".join(d["message"] for d in r.json()["detail"])
    assert Prompt.objects.count() == 0 and Response.objects.count() == 0 and Comparison.objects.count() == 0
    assert PreferenceLabel.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize("filename,content", [
    ("qa.csv", b"question,answer\nwhat?,that\n"),
    ("qa.parquet", _parquet([{"question": "what?", "answer": "that"}])),
])
def test_it_names_the_missing_column_once_for_a_file_with_a_header(client, people, filename, content):
    r = _upload(client, people.users["alice"], people.project.pk, filename, content)
    assert r.status_code == 422
    assert r.json()["detail"][0]["message"] == (
        f"{filename} has no 'prompt', 'messages', 'conversations' or 'chosen'/'rejected' column "
        "(columns: question, answer)")
    assert not Prompt.objects.exists()
