"""umm_ray.models"""
