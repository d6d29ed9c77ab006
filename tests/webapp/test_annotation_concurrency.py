"""The queue under load on PostgreSQL: many processes, each with several threads, each thread an
annotator labelling and skipping items at random, while two items taken by annotators who walked
away must come back after the timeout (half the processes on the
single-statement fast path, half on the ORM path, interleaved). Afterwards no comparison has more
labels than its overlap, nobody saw a comparison twice, and every slot was filled."""

import subprocess
import sys
import textwrap
import time

import pytest
from django.db.models import Count

from tests.conftest import ROOT
from webapp.annotation.models import Assignment, Comparison, PreferenceLabel
from webapp.annotation.services import comparisons_build
from webapp.datasets.models import Dataset, Prompt, Response
from webapp.projects.models import Membership

WORKER = textwrap.dedent("""
    import os, random, sys, threading, time
    import django
    os.environ["DJANGO_SETTINGS_MODULE"] = "webapp.settings"
    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db import connection
    from webapp.annotation import services
    from webapp.projects.models import Project

    settings.ANNOTATION_ASSIGNMENT_TIMEOUT_SECONDS = 2
    project_id, names = int(sys.argv[1]), sys.argv[2].split(",")
    # half the processes run PostgreSQL's single-statement fast path, half the portable ORM path
    settings.ANNOTATION_FAST_PATH = sys.argv[3] == "fast"
    failures = []

    def annotate(name):
        try:
            user = get_user_model().objects.get(username=name)
            project = Project.objects.get(pk=project_id)
            rng = random.Random(name)
            while True:
                item = services.assignment_next_item(project=project, user=user)
                if item is None:
                    return
                if rng.random() < 0.1:
                    services.assignment_skip(project=project, user=user, assignment_id=item["assignment_id"])
                else:
                    services.label_submit(project=project, user=user, assignment_id=item["assignment_id"],
                                          choice=rng.choice(["A", "B", "tie"]))
        except Exception as exc:  # noqa: BLE001
            failures.append(f"{name}: {type(exc).__name__}: {exc}")
        finally:
            connection.close()

    threads = [threading.Thread(target=annotate, args=(n,)) for n in names]
    for t in threads: t.start()
    for t in threads: t.join()
    print("\\n".join(failures))
    sys.exit(1 if failures else 0)
""")


@pytest.mark.django_db(transaction=True)
def test_it_keeps_the_overlap_invariant_with_many_processes_and_threads(people, service_env, django_user_model,
                                                                       settings):
    project = people.project
    dataset = Dataset.objects.create(project=project, name="load", source_format="jsonl", status="ready",
                                     created_by=people.users["alice"])
    prompts = Prompt.objects.bulk_create([Prompt(dataset=dataset, source_line=i, text=f"q{i}") for i in range(60)])
    Response.objects.bulk_create([Response(prompt=p, text=t) for p in prompts for t in ("x", "y")])
    assert comparisons_build(project=project, dataset=dataset, overlap=3) == 60
    names = [f"ann{i}" for i in range(18)]
    for name in names:
        user = django_user_model.objects.create_user(name, password="x")
        Membership.objects.create(project=project, user=user, role="annotator")
    # two annotators take an item each and walk away: the timeout must hand those to others
    from webapp.annotation.services import assignment_next_item, label_submit

    settings.ANNOTATION_ASSIGNMENT_TIMEOUT_SECONDS = 2
    for name in ("walker0", "walker1"):
        walker = django_user_model.objects.create_user(name, password="x")
        Membership.objects.create(project=project, user=walker, role="annotator")
        assert assignment_next_item(project=project, user=walker) is not None
    groups = [names[i::6] for i in range(6)]  # 6 processes x 3 threads
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(project.pk), ",".join(g), ("fast", "orm")[i % 2]],
                              cwd=ROOT,
                              env=service_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i, g in enumerate(groups)]
    outputs = [p.communicate(timeout=240)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs

    # whatever the walkers held is back in the pool by now; a late annotator finishes the queue
    time.sleep(2.1)
    late = django_user_model.objects.create_user("late", password="x")
    Membership.objects.create(project=project, user=late, role="annotator")
    while (item := assignment_next_item(project=project, user=late)) is not None:
        label_submit(project=project, user=late, assignment_id=item["assignment_id"], choice="A")
    assert sorted(Assignment.objects.filter(status="expired").values_list("annotator__username", flat=True)) == [
        "walker0", "walker1"]

    for c in Comparison.objects.annotate(n=Count("labels")):
        assert c.n <= c.overlap == 3, f"comparison {c.pk} has {c.n} labels"
        assert c.n == c.human_label_count
        held = c.assignments.filter(status__in=["active", "done"]).count()
        assert held == c.taken
    # nobody got a comparison twice (the constraint would have raised; count anyway)
    assert not Assignment.objects.values("comparison", "annotator").annotate(n=Count("id")).filter(n__gt=1).exists()
    # every slot ends up labelled
    assert PreferenceLabel.objects.count() == 180
    assert Assignment.objects.filter(status="skipped").exists()
