from steps.data import load_data, split_data
from steps.evaluate import evaluate_model
from steps.train import train_model

__all__ = ["evaluate_model", "load_data", "split_data", "train_model"]
