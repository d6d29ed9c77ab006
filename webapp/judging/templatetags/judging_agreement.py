"""The raters page's table of LM judges per prompt-template version (annotation's page includes it; judging
owns the LM labels it counts, and annotation does not import judging)."""

from django import template

from webapp.judging.selectors import template_version_agreement

register = template.Library()


@register.inclusion_tag("judging/_template_agreement.html")
def template_agreement(project) -> dict:
    return {"templates": template_version_agreement(project=project)}
