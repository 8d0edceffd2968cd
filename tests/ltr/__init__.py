"""Tests of lorank.ltr: LambdaMART on feature tables, the ltr verbs, the ltr study step."""
