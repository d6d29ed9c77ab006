from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from webapp.forms_util import service_errors_as_messages, service_errors_on
from webapp.projects import selectors, services
from webapp.projects.forms import MemberForm, ProjectForm, ProjectSettingsForm
from webapp.projects.models import Membership
from webapp.projects.permissions import Capability, RoleRequired, project_for_user, role_allows


@login_required
def project_list(request: HttpRequest) -> HttpResponse:
    form = ProjectForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        with service_errors_on(form):
            project = services.project_create(user=request.user, **form.cleaned_data)
            messages.success(request, f"Project '{project.name}' created.")
            return redirect("project_detail", project_id=project.pk)
    projects = selectors.project_list_for(user=request.user)
    roles = dict(Membership.objects.filter(user=request.user).values_list("project_id", "role"))
    rows = [(p, roles.get(p.pk)) for p in projects]
    return render(request, "projects/project_list.html", {"rows": rows, "form": form},
                  status=422 if form.errors else 200)


@login_required
def project_detail(request: HttpRequest, project_id: int) -> HttpResponse:
    project, membership = project_for_user(request.user, project_id)
    can = {c.value: role_allows(membership.role, c) for c in Capability}
    recent_jobs = project.jobs.all()[:5] if can["view_dashboards"] else []
    return render(request, "projects/project_detail.html", {
        "project": project, "membership": membership, "can": can,
        "members": selectors.member_list(project=project), "member_form": MemberForm(),
        "recent_jobs": recent_jobs,
    })


@login_required
def project_members(request: HttpRequest, project_id: int) -> HttpResponse:
    project, membership = project_for_user(request.user, project_id, Capability.MANAGE_MEMBERS)
    form = MemberForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        with service_errors_on(form):
            added = services.member_add(project=project, user_identifier=form.cleaned_data["user"],
                                        role=form.cleaned_data["role"])
            messages.success(request, f"{added.user.username} joined as {added.role}.")
            return redirect("project_members", project_id=project.pk)
    return render(request, "projects/members.html", {
        "project": project, "membership": membership, "form": form,
        "members": selectors.member_list(project=project),
    }, status=422 if form.errors else 200)


@login_required
@require_POST
def member_update(request: HttpRequest, project_id: int, user_id: int) -> HttpResponse:
    project, _ = project_for_user(request.user, project_id, Capability.MANAGE_MEMBERS)
    target = get_object_or_404(Membership, project=project, user_id=user_id)
    with service_errors_as_messages(request):
        if request.POST.get("action") == "remove":
            services.member_remove(membership=target)
            messages.success(request, "Member removed.")
        else:
            services.member_change_role(membership=target, role=request.POST.get("role", ""))
            messages.success(request, "Role changed.")
    return redirect("project_members", project_id=project.pk)


@login_required
def project_settings(request: HttpRequest, project_id: int) -> HttpResponse:
    project, membership = project_for_user(request.user, project_id, Capability.MANAGE_MEMBERS)
    fields = ("name", "description", "guidelines", "is_closed", "gold_rate")
    form = ProjectSettingsForm(request.POST or None, initial={f: getattr(project, f) for f in fields})
    if request.method == "POST" and form.is_valid():
        with service_errors_on(form):
            services.project_update(project=project, **{**form.cleaned_data,
                                                        "gold_rate": form.cleaned_data.get("gold_rate") or 0.0})
            messages.success(request, "Project settings saved.")
            return redirect("project_detail", project_id=project.pk)
    return render(request, "projects/settings.html", {"project": project, "membership": membership, "form": form},
                  status=422 if form.errors else 200)


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler403: a refusal inside the app's layout that says which role would do (the API answers
    its own 403s as JSON before this is reached)."""
    context = {"reason": str(exception) if exception and str(exception) else "You may not do this here."}
    if isinstance(exception, RoleRequired):
        context.update(project=exception.project, roles_needed=exception.roles_needed)
    return render(request, "403.html", context, status=403)
