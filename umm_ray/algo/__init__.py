"""umm_ray.algo"""
