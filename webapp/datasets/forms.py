from django import forms

from webapp.datasets.models import ImportMode, PreferenceLabels

FORMAT_CHOICES = [("", "Detect from the file"), ("jsonl", "JSON Lines"), ("csv", "CSV"), ("parquet", "Parquet"),
                  ("hf", "Hugging Face folder (zipped save_to_disk)")]


class DatasetImportForm(forms.Form):
    file = forms.FileField(help_text="JSONL, CSV, Parquet, or a .zip of a save_to_disk folder.")
    name = forms.CharField(max_length=200, required=False)
    format = forms.ChoiceField(choices=FORMAT_CHOICES, required=False)
    mode = forms.ChoiceField(choices=ImportMode.choices, initial=ImportMode.STRICT)
    preference_labels = forms.ChoiceField(label="TRL chosen/rejected", choices=PreferenceLabels.choices,
                                          initial=PreferenceLabels.NONE, required=False)

    def clean_preference_labels(self) -> str:
        return self.cleaned_data["preference_labels"] or PreferenceLabels.NONE


class BuildComparisonsForm(forms.Form):
    strategy = forms.ChoiceField(choices=[("all_pairs", "All pairs per prompt"),
                                          ("sampled_pairs", "Sampled pairs per prompt"),
                                          ("ranking", "N-way ranking per prompt")])
    pairs_per_prompt = forms.IntegerField(min_value=1, max_value=1000, initial=1, required=False)
    ranking_size = forms.IntegerField(min_value=0, max_value=26, initial=0, required=False,
                                      help_text="0: every response of the prompt")
    overlap = forms.IntegerField(min_value=1, max_value=100, initial=1, help_text="annotators per comparison")
    seed = forms.IntegerField(initial=0, required=False)
