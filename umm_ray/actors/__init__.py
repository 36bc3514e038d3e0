"""umm_ray.actors"""
