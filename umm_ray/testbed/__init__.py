"""umm_ray.testbed"""
