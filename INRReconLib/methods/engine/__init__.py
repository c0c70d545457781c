"""The INR engine every INR method (nerp, inr, and the dynamic and population methods to come)
is built on. Each file holds one part:

  coords.py   CoordinateFrame: physical coordinates (mm in the grid frame, seconds) -> the
              field's input in (-1, 1), with the normalisation explicit and kept with the model;
  model.py    FieldImage: a field with what its output means declared at construction (the
              intensity scale to physics units, real or complex output, its coordinate frame);
  render.py   the model on any grid (finer, or shifted, same orientation) and at any times;
  problem.py  Problem: the measurement, its operator and the normalised units the fit runs in;
  fitting.py  the loops: fitting the model to an image (prior embedding) and to the measurements
              (Adam with schedules, ordered subsets, chunking with checkpointing, coarse to fine,
              ADMM), reporting to a Monitor and stopping when it asks;
  run.py      InrRun: what every INR method does before and after its own part (config, problem,
              model, result, errors), so a method file holds only what is its own.
"""
