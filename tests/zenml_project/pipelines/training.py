from conveyor import pipeline  # zenml: from zenml import pipeline

from steps import evaluate_model, load_data, split_data, train_model
from steps.hooks import notify_success


@pipeline(enable_cache=False, on_success=notify_success)
def training_pipeline(n_rows: int = 100, seed: int = 0):
    dataset = load_data(n_rows=n_rows, seed=seed)
    train_set, test_set = split_data(dataset)
    model = train_model(train_set)
    evaluate_model(model, test_set)
