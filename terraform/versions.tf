terraform {
  required_version = ">= 1.5.0"

  required_providers {
    digitalocean = {
      source  = "digitalocean/digitalocean"
      version = "~> 2.40"
    }
  }

  # State is local (terraform.tfstate beside this file) unless a backend is configured.
  # See README.md for the remote-backend option (DigitalOcean Spaces through the s3 backend).
}
