"""The `sagemaker` step operator: a step as an Amazon SageMaker training job. Importing this package imports no boto3."""
