"""Traffic-peak autoscaling simulator (issue 8): the Kubernetes HPA algorithm as pure
functions (`hpa`), measured pod capacity and start-up (`capacity`, `startup`), arrival
traces (`traces`), the scaling signals (`signals`), a discrete-event simulation of a
VoiceService (`sim`) and its scores and plots (`report`). Driven by bench/autoscale_sim.py.
"""
