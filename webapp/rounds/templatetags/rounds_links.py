"""The run page's links into the design loop (the job page includes them; rounds owns what they point at)."""

from django import template

register = template.Library()


@register.inclusion_tag("rounds/_run_links.html")
def run_links(project, job) -> dict:
    from webapp.rounds.selectors import run_loop_links

    return {"project": project, "job": job, **run_loop_links(job=job)}
