"""Envelope files (local or s3://, plain, gzip or archive Avro) and the S3 object access they share."""
