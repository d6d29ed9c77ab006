from django import forms

STRATEGY_CHOICES = [
    ("uncertainty", "uncertainty — judge doubt (position bias, low confidence) goes to people"),
    ("topk", "topk — the comparisons with the largest predicted gain (Hybrid Preferences)"),
    ("optimal_pos", "optimal_pos — every comparison with a positive predicted gain, up to the budget"),
    ("random", "random — a uniform draw (baseline)"),
    ("steps_agreement", "steps_agreement — step items: people get those where the step judge agrees least with people"),
]


class PlanForm(forms.Form):
    budget = forms.CharField(max_length=40, required=False, initial="25%",
                             help_text="For people: a share (25%, 0.25) or a count (300) of the comparisons.")
    strategy = forms.ChoiceField(choices=STRATEGY_CHOICES, initial="uncertainty")
    judge_config = forms.TypedChoiceField(coerce=int, required=False, empty_value=None, label="LM judge")
    template = forms.TypedChoiceField(coerce=int, required=False, empty_value=None, label="Judge prompt")
    seed = forms.IntegerField(initial=0, required=False)

    def __init__(self, *args, project=None, **kwargs):
        super().__init__(*args, **kwargs)
        from webapp.judging.selectors import judge_config_list, template_latest_list

        configs = list(judge_config_list(project=project))
        self.fields["judge_config"].choices = [("", "—")] + [(c.pk, c.name) for c in configs]
        if len(configs) == 1:  # the project's only judge is the one meant; "—" stays for no judge
            self.fields["judge_config"].initial = configs[0].pk
        self.fields["template"].choices = [("", "built-in default")] + [
            (t.pk, str(t)) for t in template_latest_list(project=project) if t.mode in ("compare", "steps")]


class TagForm(forms.Form):
    judge_config = forms.TypedChoiceField(coerce=int, required=False, empty_value=None, label="Tagging LM")
    categories = forms.CharField(max_length=2000, required=False, label="Categories",
                                 help_text="Comma-separated, e.g. math, code, writing, safety, other.")
    multi_label = forms.BooleanField(required=False, label="Allow several categories per prompt")

    def __init__(self, *args, project=None, **kwargs):
        kwargs.setdefault("prefix", "tag")  # the plan form on the same page has a judge_config field too
        super().__init__(*args, **kwargs)
        from webapp.judging.selectors import judge_config_list

        configs = list(judge_config_list(project=project))
        self.fields["judge_config"].choices = [("", "—")] + [(c.pk, c.name) for c in configs]
        if len(configs) == 1:
            self.fields["judge_config"].initial = configs[0].pk
