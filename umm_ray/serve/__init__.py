"""umm_ray.serve"""
