"""Connectors (issue #18): sync bundles with AWS Secrets Manager and GCP Secret Manager."""
