"""Candidates x stages (plan -> serve -> bench -> eval) as one resumable run tied together in the store.

    from rigbench import experiment
    exp = experiment.load("examples/cpu-embedded.yaml")
    plans = experiment.plan_all(exp)                 # no hardware: placement and predicted speed
    eid = experiment.start(exp, None)                # a new experiment id in the store
    experiment.run(exp, eid, None)                   # serve, bench, eval, stop, for each candidate
"""

from rigbench.experiment.predict import CandidatePlan, Predicted, plan_all, plan_candidate
from rigbench.experiment.run import Hooks, StepResult, run, start, stored_spec, work_units
from rigbench.experiment.spec import Candidate, ExperimentFileError, ExperimentSpec, load

__all__ = ["Candidate", "CandidatePlan", "ExperimentFileError", "ExperimentSpec", "Hooks", "Predicted",
           "StepResult", "load", "plan_all", "plan_candidate", "run", "start", "stored_spec", "work_units"]
