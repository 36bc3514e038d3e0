"""umm_ray.train"""
