"""The `azureml` step operator: one Azure Machine Learning command job per step attempt."""
