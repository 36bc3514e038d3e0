"""umm_ray.eval: evaluation drivers on Ray (Best-of-N)."""
