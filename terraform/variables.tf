variable "do_token" {
  description = "DigitalOcean API token. Leave unset to use the DIGITALOCEAN_TOKEN environment variable."
  type        = string
  default     = null
  sensitive   = true
}

variable "name" {
  description = "Name of the droplet and prefix of every other resource."
  type        = string
  default     = "preview-deployer"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,62}[a-z0-9]$", var.name))
    error_message = "name must be a lowercase hostname label: letters, digits and '-', 2 to 64 characters, starting with a letter."
  }
}

variable "region" {
  description = "DigitalOcean region slug of the droplet and its reserved IP."
  type        = string
  default     = "fra1"

  validation {
    condition     = contains(["ams3", "atl1", "blr1", "fra1", "lon1", "nyc1", "nyc2", "nyc3", "sfo2", "sfo3", "sgp1", "syd1", "tor1"], var.region)
    error_message = "region must be a DigitalOcean region slug that offers droplets and reserved IPs, for example fra1, nyc3 or sfo3."
  }
}

variable "droplet_size" {
  description = "Droplet size slug. Previews are limited to 512 MB each, so 2 GB is the useful minimum."
  type        = string
  default     = "s-2vcpu-4gb"

  validation {
    condition     = can(regex("^[a-z][a-z0-9_]*-[0-9]+(vcpu-[0-9]+gb)?(-[a-z0-9]+)*$", var.droplet_size)) && !can(regex("^s-1vcpu-(512mb|1gb)", var.droplet_size))
    error_message = "droplet_size must be a droplet size slug such as s-2vcpu-4gb, with at least 2 GB of memory."
  }
}

variable "ssh_public_key" {
  description = "OpenSSH public key (one line) installed for root on the droplet."
  type        = string

  validation {
    condition     = can(regex("^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh.com) [A-Za-z0-9+/=]+( .*)?$", trimspace(var.ssh_public_key)))
    error_message = "ssh_public_key must be one OpenSSH public key line, for example the content of ~/.ssh/id_ed25519.pub."
  }
}

variable "admin_cidrs" {
  description = "Source addresses allowed to reach SSH (port 22). Narrow this to your own address, for example [\"203.0.113.7/32\"]."
  type        = list(string)
  default     = ["0.0.0.0/0", "::/0"]

  validation {
    condition     = length(var.admin_cidrs) > 0 && alltrue([for cidr in var.admin_cidrs : can(cidrhost(cidr, 0))])
    error_message = "admin_cidrs must be a non-empty list of CIDR blocks, for example [\"203.0.113.7/32\"]."
  }
}

variable "tags" {
  description = "Extra tags for the droplet. The firewall attaches through the tag named after var.name."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for tag in var.tags : can(regex("^[A-Za-z0-9:_.-]{1,255}$", tag))])
    error_message = "tags may contain only letters, digits, ':', '_', '.' and '-'."
  }
}

variable "alert_email" {
  description = "E-mail address for monitor alerts (CPU, memory, disk). No alerts are created when it is null."
  type        = string
  default     = null

  validation {
    condition     = var.alert_email == null || can(regex("^[^@[:space:]]+@[^@[:space:]]+\\.[^@[:space:]]+$", var.alert_email))
    error_message = "alert_email must be null or one e-mail address."
  }
}

variable "alert_threshold_percent" {
  description = "Usage in percent above which CPU, memory and disk alerts fire (over 5 minutes)."
  type        = number
  default     = 90

  validation {
    condition     = var.alert_threshold_percent > 0 && var.alert_threshold_percent <= 100
    error_message = "alert_threshold_percent must be between 1 and 100."
  }
}

variable "preview_domain" {
  description = "The domain previews are served under ({slug}-pr-{N}.{preview_domain}), the orchestrator's PREVIEW_DOMAIN. With dns_zone set, Terraform creates its two A records; empty: path routing, or create the records yourself (README)."
  type        = string
  default     = ""

  validation {
    condition     = var.preview_domain == "" || can(regex("^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z]{2,63}$", var.preview_domain))
    error_message = "preview_domain must be empty or a lowercase domain name such as preview.example.com."
  }
}

variable "dns_zone" {
  description = "A domain whose DNS is hosted at DigitalOcean that holds preview_domain (the domain itself or a parent, e.g. example.com). Set, Terraform creates the A records {preview_domain} and *.{preview_domain} pointing at the reserved IP. Empty: Terraform leaves DNS alone."
  type        = string
  default     = ""

  validation {
    condition     = var.dns_zone == "" || can(regex("^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z]{2,63}$", var.dns_zone))
    error_message = "dns_zone must be empty or a lowercase domain name such as example.com."
  }
}

variable "worker_count" {
  description = "Number of Swarm worker droplets beside the server (0 to 20). With 0, previews run on the server alone (ENGINE=compose); with workers, Ansible forms a Docker Swarm and previews spread over every node (ENGINE=swarm)."
  type        = number
  default     = 0

  validation {
    condition     = var.worker_count >= 0 && var.worker_count <= 20 && floor(var.worker_count) == var.worker_count
    error_message = "worker_count must be a whole number from 0 to 20."
  }
}

variable "worker_size" {
  description = "Droplet size slug of the workers; empty uses droplet_size."
  type        = string
  default     = ""

  validation {
    condition     = var.worker_size == "" || (can(regex("^[a-z][a-z0-9_]*-[0-9]+(vcpu-[0-9]+gb)?(-[a-z0-9]+)*$", var.worker_size)) && !can(regex("^s-1vcpu-(512mb|1gb)", var.worker_size)))
    error_message = "worker_size must be empty or a droplet size slug such as s-2vcpu-4gb, with at least 2 GB of memory."
  }
}

variable "vpc_uuid" {
  description = "ID of an existing VPC (in region) to create the server in; empty creates one with vpc_ip_range. The workers join the server's VPC; a server keeps the VPC it was created in (a move would replace it)."
  type        = string
  default     = ""

  validation {
    condition     = var.vpc_uuid == "" || can(regex("^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", var.vpc_uuid))
    error_message = "vpc_uuid must be empty or a VPC's UUID such as 0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b."
  }
}

variable "vpc_ip_range" {
  description = "Address range of the VPC Terraform creates (unused with vpc_uuid): a /16 to /24 inside 10.0.0.0/8, free in your account. Docker's own networks use 172.16.0.0/12 (ansible/README.md), so they cannot collide with it."
  type        = string
  default     = "10.10.0.0/20"

  validation {
    condition = (
      can(cidrhost(var.vpc_ip_range, 0))
      && can(regex("^10\\.[0-9]+\\.[0-9]+\\.[0-9]+/(1[6-9]|2[0-4])$", var.vpc_ip_range))
      && try(cidrhost(var.vpc_ip_range, 0) == split("/", var.vpc_ip_range)[0], false)
    )
    error_message = "vpc_ip_range must be a network address with a /16 to /24 prefix inside 10.0.0.0/8, for example 10.10.0.0/20."
  }
}
