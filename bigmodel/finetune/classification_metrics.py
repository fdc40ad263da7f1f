"""Classification metrics from a confusion matrix: accuracy, macro and micro precision, recall
and F1, a per-class table, and the matrix as JSON and as a figure.

Everything is computed from `confusion[true, predicted]` (counts), so the JSON's numbers can be
checked against its own matrix. Conventions (scikit-learn's `precision_recall_fscore_support`
with `zero_division=0`):
- a class never predicted has precision 0; a class with no examples has recall 0; F1 is 0 when
  precision + recall is 0;
- macro averages are the unweighted means of the per-class values over all classes (macro F1 is
  the mean of the per-class F1s, not the F1 of macro precision and recall);
- micro averages pool every decision: with one label per example, micro precision = micro
  recall = micro F1 = accuracy (each error is one false positive and one false negative).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def confusion_matrix(labels, predictions, n_classes: int) -> np.ndarray:
    """int64 [n_classes, n_classes]: row = true class, column = predicted class."""
    labels, predictions = np.asarray(labels, np.int64), np.asarray(predictions, np.int64)
    if labels.shape != predictions.shape:
        raise ValueError(f"{labels.size} labels but {predictions.size} predictions")
    if labels.size and (min(labels.min(), predictions.min()) < 0 or max(labels.max(), predictions.max()) >= n_classes):
        raise ValueError(f"labels and predictions must lie in 0 … {n_classes - 1}")
    return np.bincount(labels * n_classes + predictions, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0."""
    numerator, denominator = np.asarray(numerator, float), np.asarray(denominator, float)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def classification_report(confusion: np.ndarray, class_names: tuple[str, ...] | list[str]) -> dict:
    """Accuracy, macro/micro precision, recall, F1, the per-class rows and the matrix itself."""
    confusion = np.asarray(confusion, np.int64)
    true_positives = np.diag(confusion)
    support, predicted = confusion.sum(axis=1), confusion.sum(axis=0)
    precision, recall = _ratio(true_positives, predicted), _ratio(true_positives, support)
    f1 = _ratio(2 * precision * recall, precision + recall)
    total = int(confusion.sum())
    accuracy = float(_ratio(true_positives.sum(), total))
    per_class = [
        {"class": name, "precision": float(precision[index]), "recall": float(recall[index]), "f1": float(f1[index]),
         "support": int(support[index]), "predicted": int(predicted[index])}
        for index, name in enumerate(class_names)
    ]
    return {
        "examples": total,
        "accuracy": accuracy,
        "macro": {"precision": float(precision.mean()), "recall": float(recall.mean()), "f1": float(f1.mean())},
        "micro": {"precision": accuracy, "recall": accuracy, "f1": accuracy},
        "per_class": per_class,
        "class_names": list(class_names),
        "confusion_matrix": confusion.tolist(),
    }


def format_table(report: dict) -> str:
    """The per-class table (support = true examples, share = support / all), then the averages."""
    width = max(12, *(len(name) for name in report["class_names"]))
    lines = [f"{'class':<{width}}  precision  recall     f1  support  share"]
    for row in report["per_class"]:
        share = row["support"] / max(report["examples"], 1)
        lines.append(f"{row['class']:<{width}}  {row['precision']:9.3f}  {row['recall']:6.3f}  {row['f1']:5.3f}  "
                     f"{row['support']:7d}  {share:5.1%}")
    for average in ("macro", "micro"):
        values = report[average]
        lines.append(f"{average + ' avg':<{width}}  {values['precision']:9.3f}  {values['recall']:6.3f}  {values['f1']:5.3f}  "
                     f"{report['examples']:7d}")
    lines.append(f"{'accuracy':<{width}}  {'':9}  {'':6}  {report['accuracy']:5.3f}  {report['examples']:7d}")
    return "\n".join(lines)


def plot_confusion(report: dict, title: str):
    """The matrix as a figure: cells coloured by the share of the true class (row-normalised,
    so a small class reads as clearly as a large one) and labelled with their counts."""
    from bigmodel.scaling.plot_style import new_figure

    confusion = np.asarray(report["confusion_matrix"])
    names = report["class_names"]
    shares = _ratio(confusion, confusion.sum(axis=1, keepdims=True))
    size = max(4.5, 0.8 * len(names) + 2.5)
    figure = new_figure(size=(size + 1.2, size))
    axes = figure.add_subplot()
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    if len(names) <= 30:  # beyond that the labels would be unreadable anyway
        for (row, column), count in np.ndenumerate(confusion):
            axes.text(column, row, str(count), ha="center", va="center", fontsize=9,
                      color="white" if shares[row, column] > 0.6 else "black")
    axes.set_xticks(range(len(names)), names, rotation=45, ha="right")
    axes.set_yticks(range(len(names)), names)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.grid(False)
    axes.set_title(title)
    figure.colorbar(image, ax=axes, label="share of the true class")
    return figure


def write_confusion_figure(report: dict, out_dir: str | Path, title: str) -> list[Path]:
    """`<out_dir>/confusion_matrix.png` (+ .svg)."""
    from bigmodel.scaling.plot_style import save_figure

    return save_figure(plot_confusion(report, title), out_dir, "confusion_matrix")
