# Kolbo's own Python example for text to video, from its "Video Generation" docs page
# (../shared/kolbo-video-docs.txt), verbatim except for the indentation that the page's text
# extraction flattened. tests/test_sim_asgi.py runs it against Simulator.serve(),
# replacing only "https://api.kolbo.ai" (scheme, host and port).
import requests
import time
API_KEY = "kolbo_live_YOUR_API_KEY"
HEADERS = {"X-API-Key": API_KEY, "Content-Type": "application/json"}
response = requests.post(
    "https://api.kolbo.ai/api/v1/generate/video",
    headers=HEADERS,
    json={
        "prompt": "A drone flying over a snowy mountain range at golden hour",
        "duration": 5,
        "aspect_ratio": "16:9",
    },
)
data = response.json()
print("Generation ID:", data["generation_id"])
print("Poll URL:", data["poll_url"])
# Poll for completion
generation_id = data["generation_id"]
poll_interval = data.get("poll_interval_hint", 8)
while True:
    time.sleep(poll_interval)
    status = requests.get(
        f"https://api.kolbo.ai/api/v1/generate/{generation_id}/status",
        headers={"X-API-Key": API_KEY},
    ).json()
    print(f"State: {status['state']} Progress: {status.get('progress', 0)}%")
    if status["state"] == "completed":
        print("Video URL:", status["result"]["urls"][0])
        break
    if status["state"] == "failed":
        print("Error:", status.get("error"))
        break
